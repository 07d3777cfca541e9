// Package busypoll lets a forwarding thread that finds its queue empty
// keep polling it for a short, adaptive window before it sleeps, yielding
// its CPU to any other runnable thread between polls.
//
// On a virtual machine, a thread asleep on an idle vCPU is woken through
// the hypervisor: the vCPU halted, and an interrupt must bring it back.
// Each hop of a request through overlayd pays that wake-up once, and it
// dominates a small request's latency (doc/DESIGN-NOTES.md, "Busy-polling
// before sleeping"). A thread that polls instead is still running when the
// next packet comes. Polling with sched_yield(2) between tries gives way to
// another thread that wants the CPU: the scheduler runs it first. A polling
// thread still counts for the scheduler's fair share, so beside CPU-bound
// neighbours it takes its share of the CPU while it polls.
//
// The window adapts to the traffic, as the kernel's cpuidle-haltpoll
// governor adapts its own: it grows while the packets that end a sleep come
// within twice the maximum, and shrinks to nothing when they come later.
// A request/response is a chain whose round trip is short only once all its
// threads poll, so a wait of up to eight windows also opens the window, as a
// probe, as long as the probes catch packets often enough to pay.
// An idle queue, or sparse traffic, polls not at all; a request/response stream
// polls for about its round trip. A read that delivered a large batch is
// not followed by a poll: bulk traffic's wake-ups are few per packet, and
// polling between its batches spent CPU for no gain (measured: 13% more
// machine CPU per Gbit on one TCP stream, the same throughput).
package busypoll
