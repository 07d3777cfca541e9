package tun

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCPUSteering sends datagrams into a two-queue TUN with CPU steering
// from threads pinned to each of two CPUs in turn, and checks that every
// one comes out of the queue of the CPU it was sent on (CPU mod 2).
func TestCPUSteering(t *testing.T) {
	t.Parallel()
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	var cpus []int
	for c := 0; c < 1024 && len(cpus) < 2; c++ {
		if allowed.IsSet(c) && (len(cpus) == 0 || c%2 != cpus[0]%2) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 {
		t.Skip("needs an odd and an even CPU in the affinity mask")
	}
	ns := newNetns(t)
	devs := ns.create(t, "ovlsteer0", 2, WithCPUSteering())
	ns.configure(t, "ovlsteer0", testMTU)
	dst := netip.AddrPortFrom(remote, 9)
	fd := ns.dialUDP(t, dst)

	type arrival struct{ queue, sentOn int }
	got := make(chan arrival, 64)
	stop := readQueues(t, devs, func(q int, pkt []byte) {
		if p, ok := udpPayload(pkt, dst); ok {
			var cpu int
			if _, err := fmt.Sscanf(string(p), "cpu %d", &cpu); err != nil {
				t.Errorf("queue %d: datagram %q is not one of the test's", q, p)
				cpu = -1
			}
			got <- arrival{queue: q, sentOn: cpu}
		}
	})
	t.Cleanup(stop) // before ns.create's, which closes the queues again (Close is idempotent)

	const perCPU = 8
	for _, cpu := range cpus {
		sendFrom(t, cpu, fd, perCPU)
	}
	timeout := time.After(10 * time.Second)
	for range perCPU * len(cpus) {
		var a arrival
		select {
		case a = <-got:
		case <-timeout:
			t.Fatalf("fewer than %d datagrams came out of the TUN", perCPU*len(cpus))
		}
		if a.queue != a.sentOn%2 {
			t.Errorf("a datagram sent on CPU %d came out of queue %d, want queue %d", a.sentOn, a.queue, a.sentOn%2)
		}
	}
}

// sendFrom writes n datagrams "cpu <cpu>" to fd from a thread pinned to cpu,
// so that the kernel transmits them into the TUN on that CPU.
func sendFrom(t *testing.T, cpu, fd, n int) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the thread exits with the goroutine, pinned or not
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			errc <- fmt.Errorf("pin to CPU %d: %w", cpu, err)
			return
		}
		msg := fmt.Appendf(nil, "cpu %d", cpu)
		for range n {
			if _, err := unix.Write(fd, msg); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
