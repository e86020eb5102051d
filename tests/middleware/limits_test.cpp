// placeholder: filled in by the limits work
#include <gtest/gtest.h>
