/* Test groups of the src/common unit test binary. */
#ifndef TEST_COMMON_H
#define TEST_COMMON_H

int test_common_buf_run(void);
int test_common_frame_run(void);
int test_common_hist_run(void);
int test_common_time_run(void);
int test_common_list_run(void);

#endif
