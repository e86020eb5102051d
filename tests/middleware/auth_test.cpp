// placeholder: filled in by the auth work
#include <gtest/gtest.h>
