/* Runs every test group of rk_proto. */
#include "test_proto.h"

int main(void)
{
    int failed = 0;
    failed += test_proto_codec_run();
    failed += test_proto_status_run();
    return failed ? 1 : 0;
}
