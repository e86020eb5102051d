// placeholder: filled in by the tracing work
#include <gtest/gtest.h>
