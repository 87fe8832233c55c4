#include "go_asm.h"
#include "textflag.h"

// claim is fill's probing loop (see claim.go) for a batch of turns. The
// bitset has 2M bits, bit M+s a copy of bit s, so that a lane's slot s +
// lanes[k] < 2M needs no reduction mod M. It is read as 32-bit words (bit b
// is bit b&31 of word b>>5, the same bit as in the uint64 words on a
// little-endian machine) and written as 64-bit ones.
//
// Registers: SI used, DI t, R11 walks, R9/R10 the turns left, R12 M, R13
// width, BX the turn's walk, CX its slot, R8 the held bits of a block, AX and
// DX scratch.

// PROBE tests slot CX + lanes[k] of the walk at BX, below 2M, against the
// mirrored occupancy bitset at SI and shifts its bit (1 = held) into R8 from
// the right.
#define PROBE(k) \
	MOVL CX, AX; \
	ADDL (walk_lanes+4*k)(BX), AX; \
	MOVL AX, DX; \
	SHRL $5, DX; \
	MOVL (SI)(DX*4), DX; \
	BTL  AX, DX; \
	ADCL R8, R8

// SET sets bit r (a register) of the bitset at SI, using DX and AX.
#define SET(r) \
	MOVL r, DX; \
	SHRL $6, DX; \
	MOVQ (SI)(DX*8), AX; \
	BTSQ r, AX; \
	MOVQ AX, (SI)(DX*8)

// modM reduces r < 2M to r mod M (M in R12), using DX.
#define MODM(r) \
	MOVL    r, DX; \
	SUBL    R12, DX; \
	CMOVLCC DX, r

// func claim(used *uint64, t *uint32, walks *walk, turns []uint32, m uint32, width uint32)
TEXT ·claim(SB), NOSPLIT, $0-56
	MOVQ         used+0(FP), SI
	MOVQ         t+8(FP), DI
	MOVQ         walks+16(FP), R11
	MOVQ         turns_base+24(FP), R9
	MOVQ         turns_len+32(FP), R10
	MOVL         m+48(FP), R12
	MOVL         width+52(FP), R13
	TESTQ        R10, R10
	JZ           done

turn:
	MOVL  (R9), AX
	IMULQ $walk__size, AX
	LEAQ  (R11)(AX*1), BX
	MOVL  walk_slot(BX), CX
	CMPL  R13, $4
	JEQ   block4
	JHI   block

	// width 1: while the table is mostly free, the first slot usually is.
	MOVL CX, DX
	SHRL $5, DX
	MOVL (SI)(DX*4), DX
	BTL  CX, DX
	JCC  claimed

block:
	// Probe the 8 slots from CX on (no branch per probe), from the last
	// to the first so that the k-th's bit ends up as bit k of R8.
	XORL    R8, R8
	PROBE(7)
	PROBE(6)
	PROBE(5)
	PROBE(4)
	PROBE(3)
	PROBE(2)
	PROBE(1)
	PROBE(0)
	XORL    $0xff, R8
	JNZ     found
	ADDL    walk_skip8(BX), CX
	MODM(CX)
	JMP     block

block4:
	// The same 4 slots at a time, while the table is still fairly free;
	// lanes[4] = 4·skip mod M steps to the next 4.
	XORL    R8, R8
	PROBE(3)
	PROBE(2)
	PROBE(1)
	PROBE(0)
	XORL    $0xf, R8
	JNZ     found
	ADDL    (walk_lanes+16)(BX), CX
	MODM(CX)
	JMP     block4

found:
	BSFL R8, R8
	ADDL walk_lanes(BX)(R8*4), CX
	MODM(CX)

claimed:
	SET(CX)
	LEAL (CX)(R12*1), R8
	SET(R8)
	MOVL  walk_index(BX), AX
	MOVL  AX, (DI)(CX*4)
	ADDL  walk_skip(BX), CX
	MODM(CX)
	MOVL  CX, walk_slot(BX)
	ADDQ  $4, R9
	DECQ  R10
	JNZ   turn

done:
	RET
