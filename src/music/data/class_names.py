"""The datasets' class names, in label order, and the prompt templates CLIP's zero-shot head fills with them
(music.models.pretrained): OpenAI CLIP's for MNIST and SVHN (the number template) and its 18 for CIFAR-10 and
CIFAR-100, as the task-arithmetic code spells them (mlfoundations/task_vectors, src/datasets/templates.py); one
generic template elsewhere."""

GENERIC_PROMPTS = ("a photo of a {}.",)
DIGIT_PROMPTS = ('a photo of the number: "{}".',)
PHOTO_PROMPTS = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)

DIGITS = tuple("0123456789")
FASHION_MNIST = (
    "T-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
KMNIST = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")  # KMNIST's hiragana, romanised
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100 = tuple(
    name.replace("_", " ")
    for name in (
        "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
        "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup "
        "dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower "
        "leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange "
        "orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit "
        "raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel "
        "streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip "
        "turtle wardrobe whale willow_tree wolf woman worm"
    ).split()
)
