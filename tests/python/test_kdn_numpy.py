"""The kdn package with NumPy arrays against the build tree's libkdn: info, contiguous and paged
loads equal to `kdnctl export` (the format library's decode), save -> open round trips, errors
with their kdn_status, prefix lookup through kdn_find_prefix, blending."""
import os
import unittest

import kdn
from kdn_test_util import TempDirTest, export, have_module, require, synth

np = None
if have_module("numpy"):
    import numpy as np


def needs_numpy():
    require(np is not None, "NumPy is not installed (Debian: python3-numpy)")


def reference(path, layer, kv, dtype):
    """[tokens, kv_heads, head_dim] of `dtype`, from kdnctl export."""
    info = kdn.open(path).info
    np_dtype = {"fp16": np.float16, "fp32": np.float32, "bf16": np.uint16}[dtype]
    flat = np.frombuffer(export(path, layer, kv, dtype), dtype=np_dtype)
    return flat.reshape(info.n_tokens, info.model.n_kv_heads, info.model.head_dim)


class InfoTest(TempDirTest):
    def test_info_says_what_the_header_says(self):
        path = synth(self.path("a.kv"), tokens=600, codec="q4", position=7)
        with kdn.open(path) as c:
            i = c.info
            self.assertEqual(i.model.name, "synthetic")
            self.assertEqual((i.model.n_layers, i.model.n_kv_heads, i.model.head_dim), (3, 2, 16))
            self.assertEqual(i.model.dtype, "fp16")
            self.assertEqual(i.model.rope_style, "neox")
            self.assertEqual(i.n_tokens, 600)
            self.assertEqual(len(i.tokens), 600)
            self.assertEqual(i.position_offset, 7)
            self.assertTrue(i.codec.startswith("q4"), i.codec)
            self.assertEqual(i.file_bytes, os.path.getsize(path))
            self.assertEqual(i.decoded_bytes, 3 * 2 * 600 * 2 * 16 * 2)
            self.assertEqual(i.chunk_tokens, 256)
            self.assertEqual(len(i.prefix_hashes), 3)  # 256, 512, 600 tokens
            self.assertTrue(all(len(h) == 32 for h in i.prefix_hashes))
            self.assertEqual(len(i.fingerprint), 32)
            # Attributes of the cache are the header's too.
            self.assertEqual(c.n_tokens, 600)
            self.assertIn("synthetic", repr(c))
            # The chain computed from model and tokens is the file's own.
            self.assertEqual(kdn.prefix_hashes(i.model, i.tokens), list(i.prefix_hashes))
            self.assertEqual(kdn.prefix_hashes(i.model, i.tokens[:300])[0], i.prefix_hashes[0])
            self.assertNotEqual(kdn.prefix_hashes(i.model, i.tokens[:300])[1], i.prefix_hashes[1])
            self.assertEqual(len(kdn.prefix_hashes(i.model, i.tokens, chunk_tokens=100)), 6)
            c.expect_model(i.model)

    def test_version_and_library(self):
        self.assertIn("kdn", kdn.version())
        self.assertTrue(os.path.exists(kdn.library_path()), kdn.library_path())


class LoadTest(TempDirTest):
    def setUp(self):
        super().setUp()
        needs_numpy()

    def test_contiguous_loads_equal_the_reference_export(self):
        for codec in ("raw", "lossless", "q4", "q8+zstd"):
            path = synth(self.path(f"{codec}.kv"), tokens=300, codec=codec, seed=3)
            with kdn.open(path) as c:
                for dtype in ("fp16", "fp32"):
                    k, v = c.numpy(dtype=dtype)
                    self.assertEqual(k.shape, (3, 300, 2, 16))
                    for layer in range(3):
                        np.testing.assert_array_equal(k[layer], reference(path, layer, "k", dtype),
                                                      err_msg=f"{codec} {dtype} K {layer}")
                        np.testing.assert_array_equal(v[layer], reference(path, layer, "v", dtype),
                                                      err_msg=f"{codec} {dtype} V {layer}")

    def test_contiguous_at_an_offset_and_a_layer_range(self):
        path = synth(self.path("a.kv"), tokens=100)
        k = np.full((3, 130, 2, 16), 7.0, np.float32)
        v = np.full((3, 130, 2, 16), 7.0, np.float32)
        with kdn.open(path) as c:
            c.load(kdn.Contiguous(k, v), layers=(1, 3), token_offset=20)
        self.assertTrue((k[0] == 7).all() and (v[0] == 7).all(), "layer 0 not asked for")
        self.assertTrue((k[1:, :20] == 7).all() and (k[1:, 120:] == 7).all())
        for layer in (1, 2):
            np.testing.assert_array_equal(k[layer, 20:120], reference(path, layer, "k", "fp32"))
            np.testing.assert_array_equal(v[layer, 20:120], reference(path, layer, "v", "fp32"))
        # Layers as a list of per-layer arrays, one of them skipped.
        k2 = [np.zeros((100, 2, 16), np.float16) for _ in range(3)]
        with kdn.open(path) as c:
            c.load(kdn.Contiguous([k2[0], None, k2[2]], None))
        np.testing.assert_array_equal(k2[2], reference(path, 2, "k", "fp16"))
        self.assertFalse(k2[1].any())

    def _check_paged(self, path, kv_caches, place, hnd=False):
        """Every token t of the cache is at place(t) = (block, row) of kv_caches, K and V."""
        info = kdn.open(path).info
        for layer in range(info.model.n_layers):
            for half, kv in ((0, "k"), (1, "v")):
                ref = reference(path, layer, kv, "fp16")
                for t in range(info.n_tokens):
                    block, row = place(t)
                    got = (kv_caches[layer, half, block, :, row] if hnd
                           else kv_caches[layer, half, block, row])
                    np.testing.assert_array_equal(got, ref[t], err_msg=f"layer {layer} {kv} t {t}")

    def test_paged_loads_land_in_the_blocks_of_the_table(self):
        path = synth(self.path("a.kv"), tokens=300, codec="q4")
        block_size, num_blocks = 16, 40
        rng = np.random.default_rng(5)
        table = rng.permutation(num_blocks)[:19].astype(np.int32)  # 19 * 16 = 304 >= 300 tokens
        for layout in ("NHD", "HND"):
            inner = (block_size, 2, 16) if layout == "NHD" else (2, block_size, 16)
            kv_caches = np.full((3, 2, num_blocks) + inner, np.nan, np.float16)
            with kdn.open(path) as c:
                c.load(kdn.Paged(kv_caches, block_table=table, layout=layout))
            self._check_paged(path, kv_caches,
                              lambda t: (table[t // block_size], t % block_size),
                              hnd=layout == "HND")
            unused = sorted(set(range(num_blocks)) - set(table.tolist()))
            self.assertTrue(np.isnan(kv_caches[:, :, unused]).all(), "blocks not in the table")
            # The 4 rows past the last token of the last block are untouched.
            last = kv_caches[:, :, table[18]]
            tail = last[:, :, 12:] if layout == "NHD" else last[:, :, :, 12:]
            self.assertTrue(np.isnan(tail).all())

    def test_paged_with_a_slot_mapping_and_per_layer_tensors(self):
        path = synth(self.path("a.kv"), tokens=50)
        block_size, num_blocks = 8, 12
        layers = [np.zeros((2, num_blocks, block_size, 2, 16), np.float16) for _ in range(3)]
        slots = [(49 - t) + 30 for t in range(50)]  # reversed, from slot 30
        slots[10] = -1  # skipped: its slot, 69, stays empty
        with kdn.open(path) as c:
            c.load(kdn.Paged(layers, slot_mapping=slots))
        stacked = np.stack(layers)
        for layer in range(3):
            ref = reference(path, layer, "k", "fp16")
            for t in range(50):
                s = slots[t]
                row = stacked[layer, 0, s // block_size, s % block_size] if s >= 0 else None
                if s >= 0:
                    np.testing.assert_array_equal(row, ref[t])
        self.assertFalse(stacked[:, :, 69 // block_size, 69 % block_size].any(),
                         "token 10 (slot 69) was skipped")

    def test_bf16_into_uint16(self):
        path = synth(self.path("a.kv"), tokens=40, codec="lossless")
        with kdn.open(path) as c:
            k, v = c.numpy(dtype="bf16")
        self.assertEqual(k.dtype, np.uint16)
        np.testing.assert_array_equal(v[1], reference(path, 1, "v", "bf16"))


class SaveTest(TempDirTest):
    def setUp(self):
        super().setUp()
        needs_numpy()

    def test_save_then_open_round_trips(self):
        model = kdn.Model("py-test", n_layers=2, n_kv_heads=2, head_dim=8, dtype="fp16",
                          rope_style="gptj", rope_theta=500000.0)
        rng = np.random.default_rng(1)
        k = rng.standard_normal((2, 70, 2, 8)).astype(np.float16)
        v = rng.standard_normal((2, 70, 2, 8)).astype(np.float16)
        tokens = list(range(1000, 1070))
        for codec in ("raw", "lossless"):
            path = self.path(f"{codec}.kv")
            kdn.save(path, model, tokens, (k, v), codec=codec, position_offset=3,
                     chunk_tokens=32)
            with kdn.open(path) as c:
                self.assertEqual(c.info.model, model)
                self.assertEqual(c.info.tokens, tuple(tokens))
                self.assertEqual(c.info.position_offset, 3)
                self.assertEqual(c.info.chunk_tokens, 32)
                self.assertEqual(len(c.info.prefix_hashes), 3)
                k2, v2 = c.numpy()
            np.testing.assert_array_equal(k2, k)
            np.testing.assert_array_equal(v2, v)

    def test_save_from_a_paged_cache(self):
        model = kdn.Model("py-test", n_layers=2, n_kv_heads=1, head_dim=4, dtype="fp32")
        rng = np.random.default_rng(2)
        kv_caches = rng.standard_normal((2, 2, 6, 4, 1, 4)).astype(np.float32)
        table = [5, 0, 3]
        path = self.path("paged.kv")
        kdn.save(path, model, [1] * 10, kdn.Paged(kv_caches, block_table=table))
        with kdn.open(path) as c:
            k, v = c.numpy()
        for t in range(10):
            b, r = table[t // 4], t % 4
            np.testing.assert_array_equal(k[:, t], kv_caches[:, 0, b, r])
            np.testing.assert_array_equal(v[:, t], kv_caches[:, 1, b, r])


class ErrorTest(TempDirTest):
    def test_errors_carry_the_status(self):
        with self.assertRaises(kdn.Error) as e:
            kdn.open(self.path("missing.kv"))
        self.assertEqual(e.exception.status, kdn.Status.NOT_FOUND)
        self.assertEqual(e.exception.status_name, "KDN_E_NOT_FOUND")
        self.assertIn("missing.kv", str(e.exception))

        path = synth(self.path("a.kv"), tokens=300)
        with open(path, "rb") as f:
            data = f.read()
        truncated = self.path("truncated.kv")
        with open(truncated, "wb") as f:
            f.write(data[: len(data) - 5000])
        with self.assertRaises(kdn.Error) as e:
            kdn.open(truncated)
        self.assertEqual(e.exception.status, kdn.Status.CORRUPT, str(e.exception))
        self.assertNotEqual(e.exception.message, "")

        garbage = self.path("garbage.kv")
        with open(garbage, "wb") as f:
            f.write(b"not a kv file at all" * 10)
        with self.assertRaises(kdn.Error) as e:
            kdn.open(garbage)
        self.assertEqual(e.exception.status, kdn.Status.CORRUPT)

        with kdn.open(path) as c:
            other = kdn.Model("synthetic", n_layers=3, n_kv_heads=4, head_dim=16)
            with self.assertRaises(kdn.Error) as e:
                c.expect_model(other)
            self.assertEqual(e.exception.status, kdn.Status.MODEL_MISMATCH)
            self.assertIn("kv_heads", e.exception.message)

    def test_a_damaged_block_fails_its_load(self):
        needs_numpy()
        path = synth(self.path("a.kv"), tokens=300)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        # Raw blocks of 300 * 32 fp16 = 19200 bytes, each on a 4 KiB boundary after a 4 KiB
        # header: the sixth (layer 2, V) starts at 4096 + 5 * 20480.
        data[4096 + 5 * 20480 + 1000] ^= 0xFF
        with open(path, "wb") as f:
            f.write(data)
        with kdn.open(path) as c:
            with self.assertRaises(kdn.Error) as e:
                c.numpy()
            self.assertEqual(e.exception.status, kdn.Status.CORRUPT)
            k, v = c.numpy(layers=(0, 2))  # the other layers are fine
            np.testing.assert_array_equal(k[1], reference(path, 1, "k", "fp16"))

    def test_bad_destinations_are_refused_before_the_library_writes(self):
        needs_numpy()
        path = synth(self.path("a.kv"), tokens=40)
        with kdn.open(path) as c:
            small = np.zeros((3, 30, 2, 16), np.float16)
            with self.assertRaises(kdn.Error) as e:
                c.load((small, small))
            self.assertEqual(e.exception.status, kdn.Status.INVALID_ARG)
            wrong_heads = np.zeros((3, 40, 4, 8), np.float16)
            with self.assertRaises(kdn.InvalidArgument):
                c.load((wrong_heads, wrong_heads))
            kv = np.zeros((3, 2, 4, 16, 2, 16), np.float16)
            with self.assertRaises(kdn.InvalidArgument) as e:
                kdn.Paged(kv, block_table=[0, 1, 4])  # num_blocks is 4
            self.assertIn("block_table[2]", str(e.exception))
            with self.assertRaises(kdn.InvalidArgument):
                c.load(kdn.Paged(kv, block_table=[0, 1]))  # 32 < 40 tokens
            strided = np.zeros((3, 40, 2, 32), np.float16)[..., ::2]
            with self.assertRaises(kdn.InvalidArgument):
                kdn.Contiguous(strided, strided)
            readonly = np.zeros((3, 40, 2, 16), np.float16)
            readonly.flags.writeable = False
            with self.assertRaises(kdn.InvalidArgument):
                c.load((readonly, readonly))
            with self.assertRaises(kdn.InvalidArgument):
                c.load((np.zeros((3, 40, 2, 16), np.int32),) * 2)
            with self.assertRaises(kdn.Error) as e:
                c.load((np.zeros((3, 40, 2, 16), np.float16),) * 2, layers=(0, 9))
            self.assertEqual(e.exception.status, kdn.Status.INVALID_ARG)


class FindPrefixTest(TempDirTest):
    def setUp(self):
        super().setUp()
        needs_numpy()
        self.model = kdn.Model("py-prefix", n_layers=2, n_kv_heads=1, head_dim=8, dtype="fp16")
        self.prompt = [(5 + 13 * i) % 1000 for i in range(700)]
        self.set = self.path("set")
        os.mkdir(self.set)

    def save(self, name, tokens, model=None, directory=None):
        model = model or self.model
        n = len(tokens)
        k = np.ones((model.n_layers, n, model.n_kv_heads, model.head_dim), np.float16)
        path = os.path.join(directory or self.set, name)
        kdn.save(path, model, tokens, (k, k))
        return path

    def test_the_longest_prefix_is_found(self):
        self.assertIsNone(kdn.find_prefix(self.set, self.model, self.prompt))
        one = self.save("one.kv", self.prompt[:256])
        found = kdn.find_prefix(self.set, self.model, self.prompt)
        self.assertEqual(found, kdn.Prefix(one, 256))
        long = self.save("long.kv", self.prompt[:600])
        self.assertEqual(kdn.find_prefix(self.set, self.model, self.prompt), kdn.Prefix(long, 512))
        self.assertEqual(kdn.find_prefix(self.set, self.model, self.prompt[:600]).n_tokens, 600)
        # The prefix it found is what the file holds.
        with kdn.open(long) as c:
            self.assertEqual(c.info.tokens[:512], tuple(self.prompt[:512]))

    def test_files_that_do_not_hold_the_prompt_are_ignored(self):
        # Same length, one token changed in the second chunk: only the first chunk is usable.
        forged = list(self.prompt[:700])
        forged[300] ^= 1
        self.save("forged.kv", forged)
        found = kdn.find_prefix(self.set, self.model, self.prompt)
        self.assertEqual(found.n_tokens, 256)
        # Another model's cache of the whole prompt, a link to a file outside the set, a file in
        # a subdirectory: none is answered for this model.
        other = kdn.Model("py-prefix", n_layers=2, n_kv_heads=2, head_dim=8, dtype="fp16")
        self.save("other-model.kv", self.prompt, model=other)
        outside = self.path("outside")
        os.mkdir(outside)
        real = self.save("real.kv", self.prompt, directory=outside)
        os.symlink(real, os.path.join(self.set, "link.kv"))
        os.mkdir(os.path.join(self.set, "sub"))
        self.save("deep.kv", self.prompt, directory=os.path.join(self.set, "sub"))
        found = kdn.find_prefix(self.set, self.model, self.prompt)
        self.assertEqual(found, kdn.Prefix(os.path.join(self.set, "forged.kv"), 256))
        self.assertEqual(kdn.find_prefix(self.set, other, self.prompt).n_tokens, 700)

    def test_an_untrusted_owners_file_is_ignored(self):
        require(os.geteuid() == 0, "needs root to give a file to another user")
        mine = self.save("mine.kv", self.prompt[:256])
        theirs = self.save("theirs.kv", self.prompt)
        os.chown(theirs, 2000, 2000)
        self.assertEqual(kdn.find_prefix(self.set, self.model, self.prompt), kdn.Prefix(mine, 256))
        os.chown(self.set, 2000, 2000)  # now it is 2000's set
        self.assertEqual(kdn.find_prefix(self.set, self.model, self.prompt),
                         kdn.Prefix(theirs, 700))


class BlendTest(TempDirTest):
    def setUp(self):
        super().setUp()
        needs_numpy()

    def test_blend_load_is_load_then_rope_shift(self):
        path = synth(self.path("a.kv"), tokens=64, position=100,
                     shape=("--layers", "2", "--kv-heads", "2", "--head-dim", "16", "--dtype",
                            "fp32", "--rope", "gptj"))
        with kdn.open(path) as c:
            model = c.info.model
            blended = np.zeros((2, 80, 2, 16), np.float32)
            kdn.blend_load([c], [10], (blended, blended.copy()), position_base=0)
            k = np.zeros((2, 80, 2, 16), np.float32)
            v = np.zeros((2, 80, 2, 16), np.float32)
            c.load((k, v), token_offset=10)
            stored = k.copy()
            kdn.rope_shift(model, kdn.Contiguous(k, None), delta=10 - 100, token_begin=10,
                           n_tokens=64)
        np.testing.assert_array_equal(blended, k)
        self.assertFalse(np.array_equal(stored, k), "keys were re-rotated")

    def test_select_deviation_finds_the_changed_tokens_and_scatter_writes_them(self):
        path = synth(self.path("a.kv"), tokens=50,
                     shape=("--layers", "2", "--kv-heads", "2", "--head-dim", "16", "--dtype",
                            "fp32"))
        with kdn.open(path) as c:
            k, v = c.numpy()
        dest = kdn.Contiguous(k, v)
        fresh = k[1].reshape(50, 32).copy()
        fresh[7] += 5.0
        fresh[31] += 3.0
        fresh[2] += 1.0
        idx, dev = kdn.select_deviation(fresh, dest, layer=1, kv="k", ratio=0.05)
        self.assertEqual(idx, [7, 31, 2])  # ceil(0.05 * 50) = 3, largest first
        self.assertEqual(len(dev), 50)
        self.assertAlmostEqual(dev[7], 25.0 * 32, places=2)
        self.assertEqual(dev[0], 0.0)
        kdn.scatter_rows(fresh[idx], idx, dest, layer=1, kv="k")
        np.testing.assert_array_equal(k[1].reshape(50, 32), fresh)


if __name__ == "__main__":
    unittest.main()
