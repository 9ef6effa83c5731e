/**
 * @file kt_test.h
 * @brief A minimal table-driven unit test harness. Every failed check counts; main() returns
 *        non-zero if any did, and the runner prints "N passed, N failed".
 */
#ifndef KT_TEST_H
#define KT_TEST_H

#include <stdio.h>
#include <string.h>

static int kt_test_checks, kt_test_failures;

#define KT_CHECK(cond, ...)                                                                        \
        do {                                                                                       \
                kt_test_checks++;                                                                  \
                if (!(cond)) {                                                                     \
                        kt_test_failures++;                                                        \
                        fprintf(stderr, "%s:%d: FAILED: %s: ", __FILE__, __LINE__, #cond);         \
                        fprintf(stderr, __VA_ARGS__);                                              \
                        fputc('\n', stderr);                                                       \
                }                                                                                  \
        } while (0)

#define KT_CHECK_STR(got, want)                                                                    \
        KT_CHECK((got) && !strcmp((got), (want)), "got \"%s\", want \"%s\"",                       \
                 (got) ? (got) : "(null)", (want))

/** @returns the exit status for main(), after printing a summary line. */
static inline int kt_test_done(const char *name) {
        printf("%s: %d checks, %d failed\n", name, kt_test_checks, kt_test_failures);
        return kt_test_failures ? 1 : 0;
}

#endif /* KT_TEST_H */
