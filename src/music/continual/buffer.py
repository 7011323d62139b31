"""A memory filled during training, step by step: Mammoth's `Buffer` (aimagelab/mammoth, utils/buffer.py), a reservoir
(algorithm R) over every example added, each with named fields (images, labels, logits), for DER, DER++ and ER-ACE.

Its tensors live on the device of the first batch added (a draw then costs no copy); `state`/`load` move them through
a stage's cache entry, generator state included, so a cached stage continues exactly as a trained one."""

import torch
from torch import Tensor, nn

from music.continual import ContinualMethod
from music.continual.replay import reservoir


class StreamBuffer:
    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.generator = torch.Generator().manual_seed(seed)
        self.fields: dict[str, Tensor] = {}
        self.positions = torch.zeros(0, dtype=torch.long)  # per slot, the stream position of the example it holds
        self.seen = 0

    def __len__(self) -> int:
        return len(self.positions)

    def add(self, **batch: Tensor) -> None:
        """Offer each example of the batch to the reservoir (kept with probability capacity/seen)."""
        count = len(next(iter(batch.values())))
        slots = reservoir(self.positions, self.seen, count, self.capacity, self.generator)
        new = slots >= self.seen  # slots that now hold an example of this batch: row slots − seen of it
        rows = slots[new] - self.seen
        for name, values in batch.items():
            values = values.detach()
            store = self.fields[name] if name in self.fields else values.new_empty((0, *values.shape[1:]))
            values = values.to(store.device)
            if len(store) < len(slots):
                store = torch.cat([store, values.new_empty((len(slots) - len(store), *values.shape[1:]))])
            store[new.to(store.device)] = values[rows.to(values.device)]
            self.fields[name] = store
        self.positions, self.seen = slots, self.seen + count

    def draw(self, count: int, device=None, augment=None) -> dict[str, Tensor]:
        """min(count, len) examples without replacement (Mammoth's `get_data`), on `device` (default: where they are
        kept), their images through `augment` when given (Mammoth augments what it draws)."""
        chosen = torch.randperm(len(self), generator=self.generator)[:count]
        drawn = {
            name: values[chosen.to(values.device)].to(device or values.device) for name, values in self.fields.items()
        }
        return drawn | ({"images": augment(drawn["images"])} if augment is not None else {})

    def state(self) -> dict[str, Tensor]:
        fields = {f"field/{name}": values.cpu() for name, values in self.fields.items()}
        return {
            "positions": self.positions,
            "seen": torch.tensor(self.seen),
            "generator": self.generator.get_state(),
        } | fields

    def load(self, state: dict[str, Tensor], device: torch.device | None = None) -> None:
        self.positions, self.seen = state["positions"].clone(), int(state["seen"])
        self.generator.set_state(state["generator"].clone())
        fields = {k.removeprefix("field/"): v for k, v in state.items() if k.startswith("field/")}
        self.fields = {name: values.to(device or values.device) for name, values in fields.items()}


class StreamMemory(ContinualMethod):
    """A method whose memory is a StreamBuffer filled at every training step (ER, DER, DER++, ER-ACE): an empty
    memory, seeded by the run's seed, when a sequence starts; the buffer is its state between a stage and its cache
    entry."""

    def __init__(self, memory_size: int):
        self.memory_size = int(memory_size)
        self.buffer = StreamBuffer(self.memory_size, self.seed)

    def begin_stage(self, stage: int, net: nn.Module) -> None:
        if stage == 0:  # a new sequence: an empty memory
            self.buffer = StreamBuffer(self.memory_size, self.seed)

    def state(self) -> dict[str, Tensor]:
        return self.buffer.state()

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.buffer.load(state)

    def kept(self) -> int:
        return len(self.buffer)
