/* placeholder */
#include "raft_harness.h"
int main(void)
{
    const struct CMUnitTest tests[] = {H_TEST(NULL)};
    (void)tests;
    return 0;
}
