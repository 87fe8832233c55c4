#include "textflag.h"

// keys computes, for the eight slots s in Z0 (one per 64-bit lane), the key
// j<<32 | k in Z5, where j = ⌊((s·invX + base) mod 2^64)·M/2^64⌋ is the
// slot's position in the permutation (Z1 = invX, Z2 = base, Z3 = M) and k
// its index in the free list (Z6). The high product of y = yh·2^32 + yl and
// M < 2^32 is ⌊(yh·M + ⌊yl·M/2^32⌋)/2^32⌋, from two 32×32-bit multiplies.
#define KEYS \
	VPMULLQ  Z1, Z0, Z0; \
	VPADDQ   Z2, Z0, Z0; \
	VPMULUDQ Z3, Z0, Z4; \
	VPSRLQ   $32, Z0, Z5; \
	VPMULUDQ Z3, Z5, Z5; \
	VPSRLQ   $32, Z4, Z4; \
	VPADDQ   Z4, Z5, Z5; \
	VPANDQ   Z8, Z5, Z5; \
	VPORQ    Z6, Z5, Z5

DATA lanes8<>+0(SB)/8, $0
DATA lanes8<>+8(SB)/8, $1
DATA lanes8<>+16(SB)/8, $2
DATA lanes8<>+24(SB)/8, $3
DATA lanes8<>+32(SB)/8, $4
DATA lanes8<>+40(SB)/8, $5
DATA lanes8<>+48(SB)/8, $6
DATA lanes8<>+56(SB)/8, $7
GLOBL lanes8<>(SB), RODATA|NOPTR, $64

// func earliest(fs []uint32, invX, base uint64, m uint32) int
//
// The keys are distinct (distinct slots have distinct positions), so the
// smallest key names the slot earliest in the permutation.
TEXT ·earliest(SB), NOSPLIT, $0-56
	MOVQ         fs_base+0(FP), SI
	MOVQ         fs_len+8(FP), CX
	MOVQ         invX+24(FP), AX
	VPBROADCASTQ AX, Z1
	MOVQ         base+32(FP), AX
	VPBROADCASTQ AX, Z2
	MOVL         m+40(FP), AX
	VPBROADCASTQ AX, Z3
	VMOVDQU64    lanes8<>(SB), Z6
	MOVQ         $8, AX
	VPBROADCASTQ AX, Z7
	MOVQ         $0xffffffff00000000, AX
	VPBROADCASTQ AX, Z8
	VPTERNLOGQ   $0xff, Z9, Z9, Z9

loop:
	CMPQ      CX, $8
	JB        rest
	VPMOVZXDQ (SI), Z0
	KEYS
	VPMINUQ   Z5, Z9, Z9
	VPADDQ    Z7, Z6, Z6
	ADDQ      $32, SI
	SUBQ      $8, CX
	JMP       loop

rest:
	TESTQ       CX, CX
	JZ          reduce
	MOVL        $1, AX
	SHLL        CX, AX
	DECL        AX
	KMOVW       AX, K1
	VPMOVZXDQ.Z (SI), K1, Z0
	KEYS
	VPMINUQ     Z5, Z9, K1, Z9

reduce:
	VEXTRACTI64X4 $1, Z9, Y0
	VPMINUQ       Y0, Y9, Y9
	VEXTRACTI128  $1, Y9, X0
	VPMINUQ       X0, X9, X9
	VPSHUFD       $0x4e, X9, X0
	VPMINUQ       X0, X9, X9
	VMOVQ         X9, AX
	MOVL          AX, AX
	MOVQ          AX, ret+48(FP)
	VZEROUPPER
	RET
