// placeholder: filled in by the metrics work
#include <gtest/gtest.h>
