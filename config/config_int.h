/**
 * @file config_int.h
 * @brief Between the files of config/: the resolved configuration as libconfig text, which
 *        the reader's child process writes (config_reader.c) and the parent loads.
 *        Nothing outside config/ includes it.
 */
#ifndef KT_CONFIG_INT_H
#define KT_CONFIG_INT_H

#include "config.h"

#include <stdio.h>

/**
 * @brief Write every setting of \p conf, fully resolved (references expanded, secrets
 *        included: this goes over a pipe to the parent, never to a log), with its source, as
 *        libconfig text that kt_config_from_render() loads.
 * @returns 0, -1 on a write error.
 */
int kt_config_render(const kt_config_t *conf, FILE *out);

/**
 * @brief Load what kt_config_render() wrote, from memory: no file, no environment variable
 *        and no reference is read again; derived values and the hash are computed again.
 * @returns a new config, or NULL with the reason in \p errstr.
 */
kt_config_t *kt_config_from_render(const char *text, char *errstr, size_t errstr_size);

/**
 * @brief What kt_config_reader_start() does, with any child: \p fn(fd, \p arg) runs in the
 *        child and writes its answer to fd ('O' + kt_config_render() text, or 'E', 'j'|'t' and
 *        the errors); it is killed if not done within \p timeout_ms. \p path names it in
 *        messages (may be NULL). For tests of the deadline and of children that die.
 */
kt_config_reader_t *kt_config_reader_run(void (*fn)(int fd, void *arg), void *arg, const char *path,
                                         int timeout_ms, char *errstr, size_t errstr_size);

#endif /* KT_CONFIG_INT_H */
