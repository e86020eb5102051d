// placeholder: filled in by the retry work
#include <gtest/gtest.h>
