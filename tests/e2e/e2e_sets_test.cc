// The knowledge-set scripts (examples/sets) through tests/e2e/sets_test.sh, in a plain directory
// and in a mounted kdnfs where the build has it.
#include <filesystem>
#include <string>

#include "e2e_util.h"
#include "kdn_root.h"
#include "test_util.h"

namespace kdn::e2e {
namespace {

class SetsTest : public ::testing::TestWithParam<RootKind> {
 protected:
  static void TearDownTestSuite() { roots_.Clear(); }
  static SharedRoots roots_;
};

SharedRoots SetsTest::roots_;

TEST_P(SetsTest, CreateAddListSnapshotRemoveExportImport) {
  const std::string model = kdn::test::TestModelPath();
  KDN_REQUIRE_OR_SKIP(!model.empty(), "the test model (stories260K.bin) is not available");
  auto root = roots_.Get(GetParam());
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  const std::string dir = (*root)->path() + "/" + TestDirName();
  std::filesystem::create_directories(dir);
  const CommandResult r = RunCommand(
      {"sh", std::string(KDN_SOURCE_DIR) + "/tests/e2e/sets_test.sh", dir},
      {"KDN_ENGINE=" KDN_ENGINE_BIN, "KDN_MODEL=" + model, "KDN_SOURCE_DIR=" KDN_SOURCE_DIR});
  EXPECT_EQ(0, r.exit_code) << Describe(r);
}

INSTANTIATE_TEST_SUITE_P(Roots, SetsTest, ::testing::ValuesIn(AvailableRoots()),
                         [](const auto& info) { return std::string(RootName(info.param)); });

}  // namespace
}  // namespace kdn::e2e
