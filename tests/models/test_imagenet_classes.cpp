#include <gtest/gtest.h>

#include <set>

#include "models/imagenet_classes.h"

using namespace ssmx;

TEST(ImageNetClasses, ThousandNamesInTheStandardOrder) {
  int named = 0;
  std::set<std::string> distinct;
  for (int64_t i = 0; i < 1000; ++i) {
    const std::string n = imagenet_class_name(i);
    named += !n.empty();
    distinct.insert(n);
    EXPECT_EQ(n.find_first_of("_\n\t\""), std::string::npos) << i;
  }
  EXPECT_EQ(named, 1000);
  EXPECT_EQ(distinct.size(), 998u);  // "crane" (134, 517) and "maillot" (638, 639) occur twice
  EXPECT_EQ(imagenet_class_name(-1), "");
  EXPECT_EQ(imagenet_class_name(1000), "");
  const std::pair<int, const char*> anchors[] = {
      {0, "tench"},          {1, "goldfish"},        {2, "great white shark"}, {7, "cock"},
      {134, "crane"},        {151, "Chihuahua"},     {207, "golden retriever"}, {208, "Labrador retriever"},
      {281, "tabby"},        {285, "Egyptian cat"},  {291, "lion"},             {340, "zebra"},
      {386, "African elephant"}, {409, "analog clock"}, {517, "crane"},        {817, "sports car"},
      {954, "banana"},       {963, "pizza"},         {999, "toilet tissue"}};
  for (const auto& [i, name] : anchors) EXPECT_EQ(imagenet_class_name(i), name) << i;
}
