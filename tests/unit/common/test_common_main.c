/* Runs every test group of src/common. */
#include "test_common.h"

int main(void)
{
    int failed = 0;
    failed += test_common_buf_run();
    failed += test_common_frame_run();
    failed += test_common_hist_run();
    failed += test_common_time_run();
    failed += test_common_list_run();
    return failed ? 1 : 0;
}
