package pollwake

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// A Waker is the eventfd that ends the waits of its Sets.
type Waker struct{ fd int }

// New opens a Waker.
func New() (*Waker, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &Waker{fd: fd}, nil
}

// Set is a descriptor to wait for, and its Waker. Build it once (Waker.Set)
// and keep it: a Wait on it allocates nothing.
type Set [2]unix.PollFd

// Set waits for events (POLLIN, POLLOUT) on fd, or for w.
func (w *Waker) Set(fd int, events int16) Set {
	return Set{{Fd: int32(fd), Events: events}, {Fd: int32(w.fd), Events: unix.POLLIN}}
}

// Wait sleeps until the descriptor has one of its events, or an error or
// hang-up, or the Waker is woken. A signal ends it early, without error:
// the caller tries its operation again either way. The error is poll(2)'s,
// unwrapped.
func (s *Set) Wait() error {
	if _, err := unix.Poll(s[:], -1); err != nil && err != unix.EINTR {
		return err
	}
	return nil
}

// Revents is what the last Wait found on the descriptor.
func (s *Set) Revents() int16 { return s[0].Revents }

// Wake ends every Wait of w's Sets, those asleep now and all later ones.
func (w *Waker) Wake() error {
	_, err := unix.Write(w.fd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	return err
}

// Close closes the eventfd. Call it once no Wait can run.
func (w *Waker) Close() error { return unix.Close(w.fd) }
