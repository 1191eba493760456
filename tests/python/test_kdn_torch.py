"""The kdn package with PyTorch tensors (Debian's python3-torch, 1.13): contiguous and paged loads
equal `kdnctl export`, bf16, save from tensors, and, where this build has a CUDA backend and
the machine a device, loads into CUDA tensors."""
import os
import unittest

import kdn
from kdn_test_util import TempDirTest, export, have_module, require, synth

torch = None
if have_module("torch"):
    import torch


def reference(path, layer, kv, dtype):
    info = kdn.open(path).info
    t_dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    raw = bytearray(export(path, layer, kv, dtype))
    flat = torch.frombuffer(raw, dtype=t_dtype)
    return flat.reshape(info.n_tokens, info.model.n_kv_heads, info.model.head_dim)


class TorchTest(TempDirTest):
    def setUp(self):
        super().setUp()
        require(torch is not None, "PyTorch is not installed (Debian: python3-torch)")

    def test_contiguous_loads_equal_the_reference_export(self):
        for codec in ("raw", "q4"):
            path = synth(self.path(f"{codec}.kv"), tokens=200, codec=codec, seed=4)
            with kdn.open(path) as c:
                for dtype in ("fp16", "bf16", "fp32"):
                    k, v = c.torch(dtype=dtype)
                    self.assertEqual(tuple(k.shape), (3, 200, 2, 16))
                    for layer in range(3):
                        self.assertTrue(torch.equal(k[layer], reference(path, layer, "k", dtype)),
                                        f"{codec} {dtype} K {layer}")
                        self.assertTrue(torch.equal(v[layer], reference(path, layer, "v", dtype)),
                                        f"{codec} {dtype} V {layer}")

    def test_paged_loads_land_in_the_blocks_of_the_table(self):
        path = synth(self.path("a.kv"), tokens=100, codec="lossless")
        num_blocks, block_size = 20, 16
        kv_caches = [torch.full((2, num_blocks, block_size, 2, 16), float("nan"),
                                dtype=torch.bfloat16) for _ in range(3)]
        table = torch.tensor([9, 2, 17, 0, 5, 11, 3], dtype=torch.int32)  # 7 * 16 >= 100
        with kdn.open(path) as c:
            c.load(kdn.Paged(kv_caches, block_table=table))
        for layer in range(3):
            for half, kv in ((0, "k"), (1, "v")):
                ref = reference(path, layer, kv, "bf16")
                for t in range(100):
                    got = kv_caches[layer][half, int(table[t // block_size]), t % block_size]
                    self.assertTrue(torch.equal(got, ref[t]), f"layer {layer} {kv} token {t}")
            used = set(table.tolist())
            for b in range(num_blocks):
                if b not in used:
                    self.assertTrue(torch.isnan(kv_caches[layer][:, b].float()).all())

    def test_save_from_tensors_round_trips(self):
        model = kdn.Model("py-torch", n_layers=2, n_kv_heads=2, head_dim=8, dtype="bf16")
        g = torch.Generator().manual_seed(3)
        k = torch.randn(2, 33, 2, 8, generator=g).to(torch.bfloat16)
        v = torch.randn(2, 33, 2, 8, generator=g).to(torch.bfloat16)
        path = self.path("t.kv")
        kdn.save(path, model, torch.arange(33), (k, v), codec="lossless")
        with kdn.open(path) as c:
            self.assertEqual(c.info.model, model)
            self.assertEqual(c.info.tokens, tuple(range(33)))
            k2, v2 = c.torch()
        self.assertTrue(torch.equal(k, k2) and torch.equal(v, v2))

    def test_a_non_contiguous_tensor_is_refused(self):
        path = synth(self.path("a.kv"), tokens=10)
        k = torch.zeros(3, 2, 10, 16, dtype=torch.float16).transpose(1, 2)  # [3, 10, 2, 16] view
        with kdn.open(path) as c:
            with self.assertRaises(kdn.InvalidArgument):
                c.load((k, k))
            c.load((k.contiguous(), k.contiguous()))

    def test_cuda_tensors(self):
        if not torch.cuda.is_available():
            self.skipTest("skipped: no CUDA device visible to torch")
        if "cuda" not in kdn.version():
            self.skipTest("skipped: this libkdn has no CUDA backend (" + kdn.version() + ")")
        path = synth(self.path("a.kv"), tokens=300, codec="q4")
        num_blocks, block_size = 32, 16
        kv = torch.zeros(3, 2, num_blocks, block_size, 2, 16, dtype=torch.float16, device="cuda")
        table = list(range(num_blocks - 1, num_blocks - 20, -1))
        with kdn.open(path, device=0) as c:
            c.load(kdn.Paged(kv, block_table=table))
            k, v = c.torch()
        self.assertEqual(k.device.type, "cuda")
        host = kv.cpu()
        for layer in range(3):
            ref = reference(path, layer, "k", "fp16")
            self.assertTrue(torch.equal(k[layer].cpu(), ref))
            for t in range(0, 300, 7):
                self.assertTrue(torch.equal(host[layer, 0, table[t // 16], t % 16], ref[t]))


if __name__ == "__main__":
    unittest.main()
