// placeholder: filled in by the timeout work
#include <gtest/gtest.h>
