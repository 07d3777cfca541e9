package main

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/overlayd/overlayd/tunnel"
)

// lockName is the abstract unix socket that an overlayd with TUN name tun
// holds while it runs. Abstract sockets belong to the network namespace,
// as the TUN does, and vanish with their process: no stale lock survives
// a crash.
func lockName(tun string) string { return "@overlayd/" + tun + ".lock" }

// defaultControlSocket is the control socket of an overlayd with TUN name
// tun: abstract too, so one per network namespace.
func defaultControlSocket(tun string) string { return "@overlayd/" + tun }

// lockInstance makes this process the only overlayd with TUN name tun in
// this network namespace. It must run before anything is touched (TUN,
// port, control socket), so that a second daemon leaves the first alone.
// The lock is released by release, or when the process ends.
func lockInstance(tun string) (release func(), err error) {
	name := lockName(tun)
	ln, err := net.Listen("unix", name)
	if errors.Is(err, syscall.EADDRINUSE) {
		who := "another overlayd"
		if pid, perr := lockHolder(name); perr == nil {
			who = fmt.Sprintf("overlayd pid %d", pid)
		}
		return nil, fmt.Errorf("%s already runs with --tun-name %s in this network namespace; stop it first (overlayd status --tun-name %s shows it), or give this one another --tun-name",
			who, tun, tun)
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	// Connections only ask who holds the lock: close them at once, so the
	// backlog never fills.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return func() { ln.Close() }, nil
}

// lockHolder is the pid of the process listening on the abstract socket
// name (SO_PEERCRED of a connection to it).
func lockHolder(name string) (int, error) {
	c, err := net.Dial("unix", name)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	cred, err := tunnel.PeerCred(c.(*net.UnixConn))
	if err != nil {
		return 0, err
	}
	return int(cred.Pid), nil
}
