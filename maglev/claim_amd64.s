#include "go_asm.h"
#include "textflag.h"

// claim is fill's probing loop (see claim.go) for a batch of turns. The
// bitset is read as 32-bit words (slot s is bit s&31 of word s>>5, the same
// bit as in the uint64 words on a little-endian machine) and written as
// 64-bit ones. Registers: SI used, DI t, R11 walks, R9/R10 the turns left,
// R12 M, R13 quick, BX the walk, CX its slot, R8 the held bits of a block,
// AX and DX scratch.

// PROBE tests slot CX + lanes[k] mod M of the walk at BX against the
// occupancy bitset at SI and shifts its bit (1 = held) into R8 from the right.
#define PROBE(k) \
	MOVL    (walk_lanes+4*k)(BX), AX; \
	ADDL    CX, AX; \
	MOVL    AX, DX; \
	SUBL    R12, DX; \
	CMOVLCC DX, AX; \
	MOVL    AX, DX; \
	SHRL    $5, DX; \
	MOVL    (SI)(DX*4), DX; \
	BTL     AX, DX; \
	ADCL    R8, R8

// modM reduces r < 2M to r mod M (M in R12), using DX.
#define MODM(r) \
	MOVL    r, DX; \
	SUBL    R12, DX; \
	CMOVLCC DX, r

// func claim(used *uint64, t *uint32, walks *walk, turns []uint32, m uint32, quick bool)
TEXT ·claim(SB), NOSPLIT, $0-53
	MOVQ         used+0(FP), SI
	MOVQ         t+8(FP), DI
	MOVQ         walks+16(FP), R11
	MOVQ         turns_base+24(FP), R9
	MOVQ         turns_len+32(FP), R10
	MOVL         m+48(FP), R12
	MOVBLZX      quick+52(FP), R13
	TESTQ        R10, R10
	JZ           done

turn:
	MOVL  (R9), AX
	IMULQ $walk__size, AX
	LEAQ  (R11)(AX*1), BX
	MOVL  walk_slot(BX), CX
	TESTL R13, R13
	JZ    block

	// quick: while the table is mostly free, the first slot usually is.
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

found:
	BSFL R8, R8
	ADDL walk_lanes(BX)(R8*4), CX
	MODM(CX)

claimed:
	MOVL  CX, DX
	SHRL  $6, DX
	MOVQ  (SI)(DX*8), AX
	BTSQ  CX, AX
	MOVQ  AX, (SI)(DX*8)
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
