/* supervisor/clock: the two clocks qvmd and qvmctl use, in milliseconds. */
#ifndef QVMD_CLOCK_H
#define QVMD_CLOCK_H

#include <stdint.h>

/* Wall clock: milliseconds since the epoch (timestamps shown to people). */
int64_t clock_now_ms(void);
/* Monotonic clock: for durations and deadlines. */
int64_t clock_mono_ms(void);

#endif
