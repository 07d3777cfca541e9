package tun

import (
	"encoding/binary"
	"fmt"
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

// cpuSteeringInsns is the whole steering program, two struct bpf_insn
// (code, registers, offset, immediate in host byte order): return the CPU
// the packet is sent on. The TUN takes the result mod its queues. It lives
// in package data, so the addresses handed to the kernel stay valid.
var cpuSteeringInsns = func() (insns [2 * 8]byte) {
	insns[0] = 0x85 // BPF_JMP|BPF_CALL: r0 = bpf_get_smp_processor_id()
	binary.NativeEndian.PutUint32(insns[4:8], bpfFuncGetSmpProcessorID)
	insns[8] = 0x95 // BPF_JMP|BPF_EXIT: return r0
	return insns
}()

// gplLicense is the license string BPF_PROG_LOAD requires; the helper the
// program calls is not GPL-only.
var gplLicense = [...]byte{'G', 'P', 'L', 0}

// loadCPUSteering loads the steering program and returns its descriptor.
func loadCPUSteering() (int, error) {
	attr := bpfProgLoadAttr{
		progType: bpfProgTypeSocketFilter,
		insnCnt:  uint32(len(cpuSteeringInsns) / 8),
		insns:    uint64(uintptr(unsafe.Pointer(&cpuSteeringInsns[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&gplLicense[0]))),
	}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return -1, fmt.Errorf("load the CPU steering program (bpf BPF_PROG_LOAD; needs CAP_BPF or CAP_SYS_ADMIN, "+
			"and before Linux 5.11 a large enough RLIMIT_MEMLOCK): %w", errno)
	}
	return int(fd), nil
}

// steerByCPU attaches the CPU steering program to d's interface, which
// holds the program from then on: the descriptor is closed here.
func steerByCPU(d *nativeDevice) error {
	prog, err := loadCPUSteering()
	if err != nil {
		return err
	}
	defer unix.Close(prog)
	if err := unix.IoctlSetPointerInt(d.fd, unix.TUNSETSTEERINGEBPF, prog); err != nil {
		return fmt.Errorf("attach the CPU steering program (TUNSETSTEERINGEBPF): %w", err)
	}
	return nil
}
