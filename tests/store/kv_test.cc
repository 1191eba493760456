// `.kv` content in the store: validated at commit (a bad file changes nothing), its header and
// prefix hashes indexed, prefix lookups, verification and fsck of `.kv` chunks.
#include <sys/stat.h>

#include "kdn/synthetic.h"
#include "store_test_util.h"

namespace kdn {
namespace {

std::vector<std::byte> KvFile(uint32_t tokens, uint64_t seed, const char* codec = "q8") {
  auto model = ModelPreset("tiny");
  EXPECT_TRUE(model.ok());
  auto spec = CodecSpec::Parse(codec);
  EXPECT_TRUE(spec.ok());
  auto file = SynthesizeKvFile(*model, tokens, *spec, seed);
  EXPECT_TRUE(file.ok()) << file.status().ToString();
  return file.ok() ? *file : std::vector<std::byte>();
}

// A `.kv` file over exactly these tokens (for shared prefixes).
std::vector<std::byte> KvFileOver(std::vector<uint32_t> tokens) {
  ModelIdentity model = *ModelPreset("tiny");
  const uint32_t n = static_cast<uint32_t>(tokens.size());
  KvWriter w(model, CodecSpec{}, std::move(tokens));
  std::vector<std::byte> k(size_t{n} * model.channels() * DTypeSize(model.dtype)), v(k.size());
  for (uint32_t layer = 0; layer < model.n_layers; ++layer) {
    EXPECT_TRUE(SynthesizeLayerKv(model, n, layer, 1, k, v).ok());
    EXPECT_TRUE(w.AddLayer(k, v).ok());
  }
  auto bytes = w.FinishToMemory();
  EXPECT_TRUE(bytes.ok());
  return *bytes;
}

class KvStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions o = test::SmallStoreOptions();
    o.sync = SyncPolicy::kNone;
    store_ = test::OpenStore(dir_.str(), o);
    ASSERT_NE(store_, nullptr);
  }
  Result<InodeAttr> CommitNew(const std::string& name, std::span<const std::byte> bytes) {
    NewNode n;
    n.mode = S_IFREG | 0644;
    auto f = store_->Lookup(kRootIno, name);
    if (!f.ok()) f = store_->MakeNode(kRootIno, name, n);
    if (!f.ok()) return f.status();
    std::string staged = store_->NewStagingPath();
    test::WriteFile(staged, bytes);
    return store_->CommitFileContent(f->ino, staged);
  }
  test::TempDir dir_{"kdn-kv"};
  std::unique_ptr<Store> store_;
};

TEST_F(KvStoreTest, HeaderIsIndexedAtCommit) {
  auto bytes = KvFile(600, 1);
  auto a = CommitNew("doc.kv", bytes);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto info = store_->StatChunk(a->chunk);
  ASSERT_TRUE(info.ok());
  ASSERT_TRUE(info->kv.has_value());
  auto reader = KvReader::Open(MemorySource(bytes));
  ASSERT_TRUE(reader.ok());
  const KvHeader& h = (*reader)->header();
  EXPECT_EQ(info->kv->model, h.model.name);
  EXPECT_EQ(info->kv->fingerprint, h.model.Fingerprint());
  EXPECT_EQ(info->kv->n_layers, h.model.n_layers);
  EXPECT_EQ(info->kv->n_tokens, 600u);
  EXPECT_EQ(info->kv->chunk_tokens, kDefaultChunkTokens);
  EXPECT_EQ(info->kv->codec, h.codec.Name());
  EXPECT_EQ(info->kv->raw_bytes, h.decoded_bytes());
  EXPECT_EQ(info->kv->file_bytes, bytes.size());
  EXPECT_EQ(info->kv->n_prefix_hashes, 3u);  // ceil(600 / 256)
  EXPECT_TRUE(store_->VerifyChunk(a->chunk).ok());
  auto stats = store_->Stats();
  EXPECT_EQ(stats.kv_chunks, 1u);
  EXPECT_EQ(stats.kv_raw_bytes, h.decoded_bytes());
  EXPECT_GT(stats.compression_ratio, 1.5);  // q8 of fp32 KV
  // A plain file is not `.kv`.
  auto plain = CommitNew("README", std::vector<std::byte>(100, std::byte{'x'}));
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(store_->StatChunk(plain->chunk)->kv.has_value());
  test::ExpectClean(*store_);
}

TEST_F(KvStoreTest, PrefixLookupFindsTheFilesThatShareIt) {
  auto tokens = SynthesizeTokens(700, 5, 512);
  auto other = tokens;
  for (size_t i = 256; i < other.size(); ++i)
    other[i] = 3 + (other[i] + 7) % 500;  // same first chunk
  auto a = CommitNew("a.kv", KvFileOver(tokens));
  auto b = CommitNew("b.kv", KvFileOver(other));
  ASSERT_TRUE(a.ok() && b.ok());
  const Hash128 fp = ModelPreset("tiny")->Fingerprint();
  auto ha = PrefixHashes(fp, tokens, kDefaultChunkTokens);
  auto hb = PrefixHashes(fp, other, kDefaultChunkTokens);
  ASSERT_EQ(ha.size(), 3u);
  EXPECT_EQ(ha[0], hb[0]);
  EXPECT_NE(ha[1], hb[1]);
  auto shared = store_->LookupPrefix(ha[0]);
  ASSERT_TRUE(shared.ok());
  ASSERT_EQ(shared->size(), 2u);
  for (const PrefixMatch& m : *shared) {
    EXPECT_EQ(m.index, 0u);
    EXPECT_EQ(m.n_tokens, 700u);
    EXPECT_TRUE(m.ino == a->ino || m.ino == b->ino);
    EXPECT_EQ(m.chunk, m.ino == a->ino ? a->chunk : b->chunk);
  }
  auto only_a = store_->LookupPrefix(ha[2]);
  ASSERT_TRUE(only_a.ok());
  ASSERT_EQ(only_a->size(), 1u);
  EXPECT_EQ((*only_a)[0].ino, a->ino);
  EXPECT_EQ((*only_a)[0].index, 2u);
  EXPECT_TRUE(store_->LookupPrefix(Hash128{1, 2})->empty());
  auto stats = store_->Stats();
  EXPECT_EQ(stats.prefix_lookups, 3u);
  EXPECT_EQ(stats.prefix_hits, 2u);
  // Gone with the last file holding the chunk.
  ASSERT_TRUE(store_->Unlink(kRootIno, "a.kv").ok());
  EXPECT_TRUE(store_->LookupPrefix(ha[2])->empty());
  EXPECT_EQ(store_->LookupPrefix(ha[0])->size(), 1u);
  test::ExpectClean(*store_);
}

// The query behind <set>/.kdn-prefix: files named directly in one directory, of given owners only
// (so that other owners' files cannot crowd them out of the results), every name of a file.
TEST_F(KvStoreTest, PrefixLookupInADirectoryKeepsToItsEntriesAndOwners) {
  auto bytes = KvFile(600, 3);
  auto header = KvReader::Open(MemorySource(bytes));
  ASSERT_TRUE(header.ok());
  const Hash128 h = (*header)->header().prefix_hashes[1];
  NewNode dir;
  dir.mode = S_IFDIR | 0755;
  auto set = store_->MakeNode(kRootIno, "set", dir);
  auto sub = store_->MakeNode(set->ino, "sub", dir);
  ASSERT_TRUE(set.ok() && sub.ok());
  auto put = [&](Ino parent, const std::string& name, uint32_t uid) -> Result<InodeAttr> {
    NewNode n;
    n.mode = S_IFREG | 0644;
    n.uid = uid;
    KDN_ASSIGN_OR_RETURN(InodeAttr f, store_->MakeNode(parent, name, n));
    std::string staged = store_->NewStagingPath();
    test::WriteFile(staged, bytes);
    return store_->CommitFileContent(f.ino, staged);
  };
  ASSERT_TRUE(put(set->ino, "b-mine.kv", 1000).ok());
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(put(set->ino, "a-theirs" + std::to_string(i), 2000).ok());
  ASSERT_TRUE(put(sub->ino, "deep.kv", 1000).ok());
  auto mine = store_->Lookup(set->ino, "b-mine.kv");
  ASSERT_TRUE(store_->Link(mine->ino, set->ino, "c-link.kv").ok());

  const uint32_t only_1000[] = {1000};
  auto found = store_->LookupPrefixInDir(set->ino, h, only_1000, 4);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  ASSERT_EQ(found->size(), 2u) << "20 files of uid 2000 must not crowd uid 1000's out";
  EXPECT_EQ((*found)[0].name, "b-mine.kv");
  EXPECT_EQ((*found)[1].name, "c-link.kv");
  EXPECT_EQ((*found)[0].attr.ino, mine->ino);
  EXPECT_EQ((*found)[0].attr.uid, 1000u);
  EXPECT_EQ((*found)[0].index, 1u);
  const uint32_t both[] = {2000, 1000};
  EXPECT_EQ(store_->LookupPrefixInDir(set->ino, h, both, 100)->size(), 22u);
  EXPECT_EQ(store_->LookupPrefixInDir(sub->ino, h, only_1000)->size(), 1u);
  EXPECT_TRUE(store_->LookupPrefixInDir(kRootIno, h, only_1000)->empty());
  EXPECT_TRUE(store_->LookupPrefixInDir(set->ino, Hash128{1, 2}, only_1000)->empty());
  EXPECT_TRUE(store_->LookupPrefixInDir(set->ino, h, {})->empty());
  std::vector<uint32_t> too_many(Store::kMaxPrefixOwners + 1, 1000);
  EXPECT_TRUE(store_->LookupPrefixInDir(set->ino, h, too_many).status().code() ==
              Code::kInvalidArgument);
  // The largest list works (one statement for every size).
  std::vector<uint32_t> most(Store::kMaxPrefixOwners, 1000);
  EXPECT_EQ(store_->LookupPrefixInDir(set->ino, h, most)->size(), 2u);
}

TEST_F(KvStoreTest, PutIndexesToo) {
  auto bytes = KvFile(300, 2, "raw");
  auto id = store_->Put(bytes);
  ASSERT_TRUE(id.ok());
  auto reader = KvReader::Open(MemorySource(bytes));
  ASSERT_TRUE(reader.ok());
  auto m = store_->LookupPrefix((*reader)->header().prefix_hashes[1]);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->size(), 1u);
  EXPECT_EQ((*m)[0].chunk, *id);
  EXPECT_EQ((*m)[0].ino, 0u);  // no file holds it
}

TEST_F(KvStoreTest, InvalidKvIsRefusedAndChangesNothing) {
  auto good = KvFile(300, 3);
  auto a = CommitNew("doc.kv", good);
  ASSERT_TRUE(a.ok());
  const uint64_t chunks = store_->Usage().chunks;
  auto reader = KvReader::Open(MemorySource(good));
  ASSERT_TRUE(reader.ok());
  const BlockEntry& block = (*reader)->header().block(2, KvKind::kValue);

  auto flipped = KvFile(300, 4);
  flipped[block.offset + block.encoded_bytes / 2] ^= std::byte{1};
  auto truncated = KvFile(300, 5);
  truncated.resize(truncated.size() - 4096);
  auto header_damage = KvFile(300, 6);
  header_damage[100] ^= std::byte{0x10};
  for (const auto& [what, bytes] :
       {std::pair{"flipped block byte", flipped}, std::pair{"truncated", truncated},
        std::pair{"damaged header", header_damage}}) {
    SCOPED_TRACE(what);
    auto r = CommitNew("doc.kv", bytes);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << r.status().ToString();
    EXPECT_EQ(r.status().sys_errno(), EINVAL);
    EXPECT_EQ(store_->GetAttr(a->ino)->chunk, a->chunk);
    EXPECT_EQ(store_->Usage().chunks, chunks);
    EXPECT_FALSE(store_->Put(bytes).ok());
  }
  auto r = CommitNew("doc.kv", flipped);
  EXPECT_NE(r.status().message().find("layer 2"), std::string::npos) << r.status().ToString();
  test::ExpectClean(*store_);
}

TEST_F(KvStoreTest, FsckChecksKvBlocks) {
  auto bytes = KvFile(400, 7, "lossless");
  auto id = store_->Put(bytes);
  ASSERT_TRUE(id.ok());
  test::ExpectClean(*store_);
  EXPECT_TRUE(store_->VerifyChunk(*id).ok());
}

}  // namespace
}  // namespace kdn
