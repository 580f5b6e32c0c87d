// Labelled data files (TSV, CLINC150 JSON) and the content hash that ties the
// router's package to its model and calibration data.
#include <gtest/gtest.h>

#include <fstream>

#include "format/content_hash.hpp"
#include "skim/data.hpp"
#include "test_support.hpp"

namespace skim {
namespace {

using testing::expect_error;

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

TEST(LabelledData, ReadsTsvSkippingHeaderAndBlankLines) {
  testing::TemporaryDirectory dir;
  write_text(dir / "d.tsv", "sentence\tlabel\nturn on the lights\tlights_on\r\n\nwhat is\tmy balance\tbalance\n");
  auto rows = read_labelled(dir / "d.tsv");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].text, "turn on the lights");
  EXPECT_EQ(rows[0].label, "lights_on");
  EXPECT_EQ(rows[1].text, "what is\tmy balance");  // the label is after the last tab
  EXPECT_EQ(rows[1].label, "balance");
}

TEST(LabelledData, MissingLabelColumnNamesFileAndLine) {
  testing::TemporaryDirectory dir;
  write_text(dir / "d.tsv", "a\tx\nno label here\n");
  expect_error([&] { read_labelled(dir / "d.tsv"); }, ErrorCode::format, {"d.tsv:2", "no label column"});
  write_text(dir / "e.tsv", "a\tx\nsome text\t\n");
  expect_error([&] { read_labelled(dir / "e.tsv"); }, ErrorCode::format, {"e.tsv:2", "empty label"});
  write_text(dir / "f.tsv", "\n\n");
  expect_error([&] { read_labelled(dir / "f.tsv"); }, ErrorCode::invalid_argument, {"no labelled rows"});
  expect_error([&] { read_labelled(dir / "absent.tsv"); }, ErrorCode::io, {"absent.tsv"});
}

TEST(LabelledData, ClincJsonSplitsIncludeTheirOutOfScopePart) {
  testing::TemporaryDirectory dir;
  write_text(dir / "c.json",
             R"({"train": [["hi", "greeting"]], "oos_train": [["buy a boat", "oos"]],
                 "val": [["hello", "greeting"]], "oos_val": [["sell a car", "oos"]]})");
  auto train = read_labelled(dir / "c.json", "train");
  ASSERT_EQ(train.size(), 2u);
  EXPECT_EQ(train[1].label, "oos");
  EXPECT_EQ(read_labelled(dir / "c.json", "val")[1].text, "sell a car");
  expect_error([&] { read_labelled(dir / "c.json"); }, ErrorCode::invalid_argument, {"choose a split", "train"});
  expect_error([&] { read_labelled(dir / "c.json", "test"); }, ErrorCode::invalid_argument, {"no split \"test\""});
  write_text(dir / "bad.json", R"({"train": [["only text"]]})");
  expect_error([&] { read_labelled(dir / "bad.json", "train"); }, ErrorCode::format, {"train[0]", "no label"});
  write_text(dir / "broken.json", R"({"train": [["a", )");
  expect_error([&] { read_labelled(dir / "broken.json", "train"); }, ErrorCode::format, {"broken.json", "bad JSON"});
}

TEST(ContentHash, SeesEveryByteAndTheFieldBoundaries) {
  std::string data(1000, 'a');
  const auto base = format::ContentHash().update(data).hex();
  EXPECT_EQ(base.size(), 16u);
  EXPECT_EQ(base, format::ContentHash().update(data).hex());
  for (std::size_t i : {0u, 31u, 32u, 500u, 999u}) {
    std::string changed = data;
    changed[i] = 'b';
    EXPECT_NE(format::ContentHash().update(changed).hex(), base) << "byte " << i;
  }
  EXPECT_NE(format::ContentHash().update(data + '\0').hex(), base);  // length counts
  EXPECT_NE(format::ContentHash().update_field("ab").update_field("c").hex(),
            format::ContentHash().update_field("a").update_field("bc").hex());
}

}  // namespace
}  // namespace skim
