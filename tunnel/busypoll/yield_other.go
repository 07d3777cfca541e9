//go:build !linux

package busypoll

import "runtime"

// yield lets other goroutines run; only Linux's readers busy-poll.
func yield() { runtime.Gosched() }
