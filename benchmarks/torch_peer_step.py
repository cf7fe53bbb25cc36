"""One LongBERT training step in PyTorch + transformers: the peer `torch_peer.py` times.

Run by `benchmarks/torch_peer.py` with the Python of its own virtual environment
(torch and transformers are never dependencies of longbert-tf). The model is the
one `train_step.py` times, written as PLM-ICD-style code writes it: a
transformers `BertModel` (L-2/H-256/A-4 by default, randomly initialised) over
every segment, the segments' token vectors concatenated, dense label attention
(z_c = softmax over tokens of <e_i, q_c>, f_c = <z_c, w_c> + b_c), binary
cross-entropy and Adam 2e-4. `--autocast=bfloat16` wraps the forward pass in
`torch.autocast("cpu", torch.bfloat16)`, the one switch users of those projects
turn on. Prints one JSON line: step seconds and peak resident memory (GB).
"""

import argparse
import json
import os
import resource
import time

import torch
import transformers


class LongBertPeer(torch.nn.Module):
    """BERT over `[batch, segments, positions]` ids, then one attention per code."""

    def __init__(self, args):
        super().__init__()
        config = transformers.BertConfig(
            vocab_size=args.vocab_size,
            hidden_size=args.hidden_size,
            num_hidden_layers=args.num_layers,
            num_attention_heads=args.num_heads,
            intermediate_size=4 * args.hidden_size,
            max_position_embeddings=args.segment_length,
        )
        self.encoder = transformers.BertModel(config, add_pooling_layer=False)
        self.queries = torch.nn.Parameter(0.02 * torch.randn(args.num_labels, args.hidden_size))
        self.weights = torch.nn.Parameter(0.02 * torch.randn(args.num_labels, args.hidden_size))
        self.bias = torch.nn.Parameter(torch.zeros(args.num_labels))

    def forward(self, ids, mask):
        """Logits `[batch, codes]` of ids and mask `[batch, segments, positions]`."""
        batch, segments, positions = ids.shape
        tokens = self.encoder(
            input_ids=ids.view(-1, positions), attention_mask=mask.view(-1, positions)
        ).last_hidden_state.reshape(batch, segments * positions, -1)
        scores = torch.einsum("btd,cd->bct", tokens, self.queries)
        scores = scores.masked_fill(mask.view(batch, 1, -1) == 0, float("-inf"))
        context = scores.softmax(dim=-1) @ tokens  # [batch, codes, hidden]
        return (context * self.weights).sum(-1) + self.bias


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num_labels", type=int, default=72748)
    parser.add_argument("--seq_len", type=int, default=8192)
    parser.add_argument("--segment_length", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--codes_per_note", type=int, default=15)
    parser.add_argument("--autocast", choices=["none", "bfloat16"], default="none")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    model = LongBertPeer(args)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    shape = (args.batch_size, args.seq_len // args.segment_length, args.segment_length)
    ids = torch.randint(5, args.vocab_size, shape)
    mask = torch.ones(shape, dtype=torch.long)
    labels = torch.zeros(args.batch_size, args.num_labels)
    for row in labels:
        row[torch.randperm(args.num_labels)[: args.codes_per_note]] = 1.0

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=args.autocast == "bfloat16"):
            logits = model(ids, mask)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - started) / args.steps
    print(
        json.dumps(
            dict(
                step_seconds=seconds,
                peak_memory_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                torch=torch.__version__,
                transformers=transformers.__version__,
                threads=torch.get_num_threads(),
            )
        )
    )


if __name__ == "__main__":
    main()
