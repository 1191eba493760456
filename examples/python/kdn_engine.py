#!/usr/bin/env python3
"""An example Python engine over the kdn package: a llama2.c checkpoint (the same files the C
kdn-engine runs, e.g. ../shared/models/kjv-byte.bin) computed with NumPy, its KV kept in a
vLLM-shaped paged cache ([2, num_blocks, block_size, kv_heads, head_dim] per layer, a block
table per sequence).

    kdn_engine.py learn --model M --set DIR --name NAME TEXT    # prefill TEXT, save its KV
    kdn_engine.py ask --model M --set DIR [--no-cache] PROMPT    # answer, reusing a cached prefix

`learn` prefills BOS + TEXT and saves the paged cache's KV into the knowledge set DIR as
NAME.kv (kdn.save from the paged tensors). `ask` finds the longest cached prefix of BOS + PROMPT
in the set with kdn.find_prefix (which checks the file's own token ids, never just a hash),
loads it into the paged cache through the sequence's block table (kdn.Paged with a slot mapping,
so that tokens of the file beyond the prefix are skipped), prefills only the rest, and generates
greedily. --no-cache prefills everything: with a raw (or lossless) cache the generated text is
the same, since the loaded KV is bit for bit what the prefill computes.

Tokens: byte + 3, BOS 1, EOS 2 (both test models). Float32 throughout; one token per step.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import kdn  # noqa: E402  (the source tree's package when not installed)

BOS, EOS = 1, 2


def encode(text):
    return [BOS] + [b + 3 for b in text.encode()]


def decode(tokens):
    return bytes(t - 3 for t in tokens if 3 <= t < 259).decode("utf-8", "replace")


class Checkpoint:
    """A llama2.c checkpoint: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
    vocab_size (negative: separate classifier), seq_len), then float32 weights."""

    def __init__(self, path):
        header = np.fromfile(path, dtype=np.int32, count=7)
        dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = (int(x) for x in header)
        shared = vocab > 0
        vocab = abs(vocab)
        self.dim, self.hidden, self.n_layers = dim, hidden, n_layers
        self.n_heads, self.n_kv_heads, self.vocab, self.seq_len = n_heads, n_kv_heads, vocab, seq_len
        self.head_dim = dim // n_heads
        kv_dim = n_kv_heads * self.head_dim
        w = np.fromfile(path, dtype=np.float32, offset=7 * 4)
        pos = 0

        def take(*shape):
            nonlocal pos
            n = int(np.prod(shape))
            if pos + n > w.size:
                raise ValueError(f"{path}: shorter than its header says")
            out = w[pos:pos + n].reshape(shape)
            pos += n
            return out

        self.emb = take(vocab, dim)
        self.rms_att = take(n_layers, dim)
        self.wq = take(n_layers, dim, dim)
        self.wk = take(n_layers, kv_dim, dim)
        self.wv = take(n_layers, kv_dim, dim)
        self.wo = take(n_layers, dim, dim)
        self.rms_ffn = take(n_layers, dim)
        self.w1 = take(n_layers, hidden, dim)
        self.w2 = take(n_layers, dim, hidden)
        self.w3 = take(n_layers, hidden, dim)
        self.rms_final = take(dim)
        take(seq_len, self.head_dim // 2)  # freq_cis_real: recomputed below
        take(seq_len, self.head_dim // 2)  # freq_cis_imag
        self.wcls = self.emb if shared else take(vocab, dim)
        # The identity of the KV this model computes, as the C kdn-engine records it: the
        # checkpoint's stem, fp32, GPT-J-style (adjacent pairs) RoPE with theta 10000.
        self.identity = kdn.Model(name=os.path.splitext(os.path.basename(path))[0],
                                  n_layers=n_layers, n_kv_heads=n_kv_heads,
                                  head_dim=self.head_dim, dtype="fp32", rope_style="gptj",
                                  rope_theta=10000.0, n_heads=n_heads)
        i = np.arange(0, self.head_dim, 2, dtype=np.float64)
        self.inv_freq = (1.0 / (10000.0 ** (i / self.head_dim))).astype(np.float32)


class PagedKV:
    """vLLM-shaped paged KV memory: per layer [2, num_blocks, block_size, kv_heads, head_dim],
    and a free list of blocks."""

    def __init__(self, ck, num_blocks, block_size=16):
        self.block_size = block_size
        self.layers = [np.zeros((2, num_blocks, block_size, ck.n_kv_heads, ck.head_dim),
                                np.float32) for _ in range(ck.n_layers)]
        self.free = list(range(num_blocks - 1, -1, -1))  # handed out from the end: not identity

    def alloc(self, n_tokens):
        n = -(-n_tokens // self.block_size)
        if n > len(self.free):
            raise MemoryError("paged KV cache is full")
        return [self.free.pop() for _ in range(n)]


class Sequence:
    def __init__(self, kv, capacity):
        self.kv = kv
        self.table = kv.alloc(capacity)
        self.length = 0

    def slot(self, t):
        return self.table[t // self.kv.block_size] * self.kv.block_size + t % self.kv.block_size

    def gather(self, layer, half, n):
        """Tokens [0, n) of one layer's K or V, [n, kv_heads, head_dim]."""
        blocks = self.kv.layers[layer][half][self.table[: -(-n // self.kv.block_size)]]
        return blocks.reshape(-1, *blocks.shape[2:])[:n]


def rmsnorm(x, w):
    return x / np.sqrt(np.mean(x * x) + 1e-5) * w


def rope(x, pos, inv_freq):
    """GPT-J-style rotation of adjacent pairs, per head: x is [heads, head_dim]."""
    angle = pos * inv_freq
    cos, sin = np.cos(angle), np.sin(angle)
    even, odd = x[:, 0::2], x[:, 1::2]
    out = np.empty_like(x)
    out[:, 0::2] = even * cos - odd * sin
    out[:, 1::2] = even * sin + odd * cos
    return out


def step(ck, seq, token):
    """One token at position seq.length: writes its K and V into the paged cache, returns the
    logits of the next token."""
    pos = seq.length
    hd, group = ck.head_dim, ck.n_heads // ck.n_kv_heads
    x = ck.emb[token].copy()
    block, row = divmod(seq.slot(pos), seq.kv.block_size)
    for l in range(ck.n_layers):
        xb = rmsnorm(x, ck.rms_att[l])
        q = rope((ck.wq[l] @ xb).reshape(ck.n_heads, hd), pos, ck.inv_freq)
        k = rope((ck.wk[l] @ xb).reshape(ck.n_kv_heads, hd), pos, ck.inv_freq)
        v = (ck.wv[l] @ xb).reshape(ck.n_kv_heads, hd)
        seq.kv.layers[l][0, block, row] = k
        seq.kv.layers[l][1, block, row] = v
        keys = seq.gather(l, 0, pos + 1)      # [pos + 1, kv_heads, hd]
        values = seq.gather(l, 1, pos + 1)
        out = np.empty((ck.n_heads, hd), np.float32)
        for h in range(ck.n_heads):
            att = keys[:, h // group] @ q[h] / np.float32(np.sqrt(hd))
            att = np.exp(att - att.max())
            att /= att.sum()
            out[h] = att @ values[:, h // group]
        x = x + ck.wo[l] @ out.reshape(-1)
        xb = rmsnorm(x, ck.rms_ffn[l])
        h1 = ck.w1[l] @ xb
        x = x + ck.w2[l] @ ((h1 / (1.0 + np.exp(-h1))) * (ck.w3[l] @ xb))
    seq.length = pos + 1
    return ck.wcls @ rmsnorm(x, ck.rms_final)


def learn(args, ck):
    tokens = encode(args.text)
    kv = PagedKV(ck, num_blocks=-(-len(tokens) // 16) + 4)
    seq = Sequence(kv, len(tokens))
    t0 = time.perf_counter()
    for t in tokens:
        step(ck, seq, t)
    prefill = time.perf_counter() - t0
    os.makedirs(args.set, exist_ok=True)
    path = os.path.join(args.set, args.name + ".kv")
    # The sequence's KV, read from the paged cache through its block table.
    kdn.save(path, ck.identity, tokens, kdn.Paged(kv.layers, block_table=seq.table),
             codec=args.codec, chunk_tokens=args.chunk_tokens)
    print(f"learned {len(tokens)} tokens into {path} ({args.codec}, prefill {prefill:.3f} s)")


def ask(args, ck):
    tokens = encode(args.prompt)
    kv = PagedKV(ck, num_blocks=-(-(len(tokens) + args.max_tokens) // 16) + 4)
    seq = Sequence(kv, len(tokens) + args.max_tokens)
    t0 = time.perf_counter()
    cached = 0
    if not args.no_cache:
        found = kdn.find_prefix(args.set, ck.identity, tokens, chunk_tokens=args.chunk_tokens)
        if found is not None:
            with kdn.open(found.path) as c:
                c.expect_model(ck.identity)
                # The file may hold more tokens than the prompt shares with it: slots of those
                # are -1 (skipped); the first found.n_tokens go where the sequence keeps them.
                slots = [seq.slot(t) if t < found.n_tokens else -1 for t in range(c.info.n_tokens)]
                c.load(kdn.Paged(kv.layers, slot_mapping=slots))
            cached = seq.length = found.n_tokens
            print(f"cached prefix: {cached} of {len(tokens)} tokens from {found.path}",
                  file=sys.stderr)
    logits = None
    for t in tokens[seq.length:]:
        logits = step(ck, seq, t)
    if logits is None:  # the whole prompt was cached: recompute its last token for the logits
        seq.length -= 1
        logits = step(ck, seq, tokens[-1])
    ttft = time.perf_counter() - t0
    out = []
    for _ in range(args.max_tokens):
        nxt = int(np.argmax(logits))
        if nxt == EOS or seq.length >= ck.seq_len:
            break
        out.append(nxt)
        logits = step(ck, seq, nxt)
    print(f"time to first token: {ttft * 1000:.1f} ms ({cached} cached, "
          f"{len(tokens) - cached} prefilled)", file=sys.stderr)
    print(decode(out))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="llama2.c checkpoint (e.g. kjv-byte.bin)")
    p.add_argument("--set", required=True, help="knowledge set directory")
    p.add_argument("--chunk-tokens", type=int, default=32,
                   help="prefix hash granularity of saved caches and lookups (default 32)")
    sub = p.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("learn")
    lp.add_argument("--name", required=True)
    lp.add_argument("--codec", default="raw")
    lp.add_argument("text")
    ap = sub.add_parser("ask")
    ap.add_argument("--no-cache", action="store_true", help="prefill the whole prompt")
    ap.add_argument("--max-tokens", type=int, default=60)
    ap.add_argument("prompt")
    args = p.parse_args()
    ck = Checkpoint(args.model)
    learn(args, ck) if args.cmd == "learn" else ask(args, ck)


if __name__ == "__main__":
    main()
