/*  =========================================================================
    nx_pid - getpid without a system call, for nexus's own programs.

    libzmq asks getpid at every look at a socket's mailbox and every signal
    to another thread (signaler.cpp, its check for a fork), and glibc 2.25
    and later make every getpid a system call. On the virtual machines
    nexus runs on a system call is dear: in nexusd these were a third of
    all system calls and ~12 % of its CPU under pipelined acknowledged
    publishes (docs/benchmarks-log.md, 2026-12-07 10:20).

    nx_pid.c defines getpid itself, keeping the pid from the first call
    until a fork, whose child forgets it (pthread_atfork). Linked into an
    executable, that definition is the one every library of the process
    calls. Only the programs that own main link it (nexusd, nexus-gateway,
    the nexus command): a library must not replace a libc function under
    the application that links it, so libnexus never does. A program that
    links it must make new processes with fork (or posix_spawn, whose
    child calls no getpid before its exec), never clone or vfork by hand.
    =========================================================================
*/

#ifndef NX_PID_H_INCLUDED
#define NX_PID_H_INCLUDED

#include <stdbool.h>

/*  True when the process's getpid is nx_pid.c's (it is linked, and the
    pid is cached): for logs and tests.                                    */
bool nx_pid_cached(void);

#endif
