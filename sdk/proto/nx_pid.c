/*  =========================================================================
    nx_pid - getpid without a system call (nx_pid.h says why and where).
    =========================================================================
*/

#include "nx_pid.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

/*  The pid, 0 while not known: at start, in the child of a fork, and
    for good when the fork handler could not be registered (then every
    call asks the kernel, as glibc's getpid does).                         */
static pid_t s_pid;
static bool s_on;

static void s_forget(void)
{
    /*  The child has one thread now: no other call can race this one.    */
    s_pid = 0;
}

__attribute__((constructor)) static void s_start(void)
{
    s_on = pthread_atfork(NULL, NULL, s_forget) == 0;
}

pid_t getpid(void)
{
    pid_t pid = __atomic_load_n(&s_pid, __ATOMIC_RELAXED);
    if (pid)
        return pid;
    pid = (pid_t)syscall(SYS_getpid);
    /*  Before the constructor ran (another constructor called getpid), or
        without the fork handler, nothing is kept.                         */
    if (__atomic_load_n(&s_on, __ATOMIC_RELAXED))
        __atomic_store_n(&s_pid, pid, __ATOMIC_RELAXED);
    return pid;
}

bool nx_pid_cached(void)
{
    return getpid() == __atomic_load_n(&s_pid, __ATOMIC_RELAXED) &&
           __atomic_load_n(&s_on, __ATOMIC_RELAXED);
}
