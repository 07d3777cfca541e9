package tun

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	bpfProgTypeSocketFilter  = 1 // BPF_PROG_TYPE_SOCKET_FILTER
	bpfFuncGetSmpProcessorID = 8 // BPF_FUNC_get_smp_processor_id
)

// bpfProgLoadAttr is the head of union bpf_attr as BPF_PROG_LOAD reads it.
// The kernel takes a shorter attr and reads its missing tail as zeros.
type bpfProgLoadAttr struct {
	progType    uint32
	insnCnt     uint32
	insns       uint64
	license     uint64
	logLevel    uint32
	logSize     uint32
	logBuf      uint64
	kernVersion uint32
	progFlags   uint32
}

// cpuSteeringInsns is the whole steering program: return the CPU the
// packet is sent on. The TUN takes the result mod its queues.
var cpuSteeringInsns = [2]uint64{
	0x85 | bpfFuncGetSmpProcessorID<<32, // call bpf_get_smp_processor_id (r0 = CPU)
	0x95,                                // exit
}

// loadCPUSteering loads the steering program and returns its descriptor.
// The helper is not GPL-only; the license is given for older kernels that
// ask for one anyway.
func loadCPUSteering() (int, error) {
	insns := cpuSteeringInsns
	license := []byte("GPL\x00")
	attr := bpfProgLoadAttr{
		progType: bpfProgTypeSocketFilter,
		insnCnt:  uint32(len(insns)),
		insns:    uint64(uintptr(unsafe.Pointer(&insns[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(&insns)
	runtime.KeepAlive(license)
	if errno != 0 {
		return -1, fmt.Errorf("load the CPU steering program (bpf BPF_PROG_LOAD; needs CAP_BPF or CAP_SYS_ADMIN): %w", errno)
	}
	return int(fd), nil
}

// steerByCPU attaches the CPU steering program to d's interface; it holds
// the program from then on, so the descriptor is closed here.
func steerByCPU(d *nativeDevice) error {
	prog, err := loadCPUSteering()
	if err != nil {
		return err
	}
	defer unix.Close(prog)
	if err := unix.IoctlSetPointerInt(d.fd, unix.TUNSETSTEERINGEBPF, prog); err != nil {
		return fmt.Errorf("attach the CPU steering program to %s (TUNSETSTEERINGEBPF): %w", d.name, err)
	}
	return nil
}
