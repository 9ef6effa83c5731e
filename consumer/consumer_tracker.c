/* Offset tracker: see kt_tracker_t in consumer.h. Pure data, unit-tested without Kafka. */
#include "consumer_lifecycle.h"

#include <stddef.h>

void kt_tracker_init(kt_tracker_t *kt) {
        kt->head = kt->tail = NULL;
        kt->cnt = 0;
        kt->commit_offset = -1;
}

void kt_tracker_push(kt_tracker_t *kt, kt_record_t *rec) {
        rec->next = NULL;
        if (kt->tail)
                kt->tail->next = rec;
        else
                kt->head = rec;
        kt->tail = rec;
        kt->cnt++;
}

kt_record_t *kt_tracker_pop(kt_tracker_t *kt) {
        kt_record_t *rec = kt->head;

        if (!rec)
                return NULL;
        kt->head = rec->next;
        if (!kt->head)
                kt->tail = NULL;
        kt->cnt--;
        rec->next = NULL;
        return rec;
}

kt_record_t *kt_tracker_pop_done(kt_tracker_t *kt) {
        kt_record_t *rec = kt->head;

        if (!rec || rec->state != KT_REC_DONE)
                return NULL;
        kt->commit_offset = rec->offset + 1;
        return kt_tracker_pop(kt);
}
