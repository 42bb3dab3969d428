#include <gtest/gtest.h>
#include "io/raw_tensor.h"
TEST(RawTensor, Bf16RoundTrip) { EXPECT_EQ(ssmx::bf16_to_float(ssmx::float_to_bf16(1.5f)), 1.5f); }
