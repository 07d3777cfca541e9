package netns

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// enter moves the calling OS thread into the network namespace pinned at
// path. The caller must have locked the thread and must never unlock it.
func enter(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", path, err)
	}
	return nil
}
