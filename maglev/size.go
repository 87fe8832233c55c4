package maglev

import "fmt"

const (
	// DefaultSize is the table size used when none is configured: the
	// paper's 65537 slots, enough for 655 backends at the 100-slots-per-
	// backend rule.
	DefaultSize uint32 = 65537
	// MinSize is the smallest table size accepted.
	MinSize uint32 = 7
	// MaxSize is the largest table size accepted, the largest prime below
	// 2^24 (a 64 MiB table of uint32).
	MaxSize uint32 = 16777213
	// SlotsPerBackend is the number of slots per usable backend below which
	// CheckSize warns: the paper's M > 100·N, for at most about 1% imbalance.
	SlotsPerBackend = 100
)

// CheckSize validates a table size given by a user (such as the daemon's
// --table-size). The error wraps ErrSize and names the value and what is
// allowed. backends is the number of backends with weight > 0 that will share
// the table (0 when not yet known): fewer slots than backends is an error (as
// in Build); fewer than SlotsPerBackend slots per backend gives a warning
// that says so and suggests a size; otherwise warning is empty.
func CheckSize(size uint32, backends int) (warning string, err error) {
	if err := checkPrime(size); err != nil {
		return "", err
	}
	if backends > 0 && uint64(size) < uint64(backends) {
		return "", tooSmall(size, backends)
	}
	if backends > 0 && uint64(size) < SlotsPerBackend*uint64(backends) {
		return fmt.Sprintf("table size %d gives fewer than %d slots to each of %d backends, so their shares may differ by more than 1%%; use a prime of at least %d, such as %d",
			size, SlotsPerBackend, backends, SlotsPerBackend*backends, NextPrime(uint32(min(uint64(MaxSize), SlotsPerBackend*uint64(backends))))), nil
	}
	return "", nil
}

// tooSmall is the error for a table with fewer slots than backends.
func tooSmall(size uint32, backends int) error {
	return fmt.Errorf("%w: table size %d is smaller than the %d backends with weight > 0: use a prime of at least %d (%d per backend)",
		ErrSize, size, backends, NextPrime(uint32(min(uint64(MaxSize), SlotsPerBackend*uint64(backends)))), SlotsPerBackend)
}

// checkPrime returns an error wrapping ErrSize unless size is a prime in
// [MinSize, MaxSize].
func checkPrime(size uint32) error {
	if size < MinSize || size > MaxSize {
		return fmt.Errorf("%w: table size %d is out of range: allowed are primes from %d to %d (default %d)", ErrSize, size, MinSize, MaxSize, DefaultSize)
	}
	if !isPrime(size) {
		return fmt.Errorf("%w: table size %d is not prime: allowed are primes from %d to %d, such as %d or %d", ErrSize, size, MinSize, MaxSize, prevPrime(size), NextPrime(size))
	}
	return nil
}

// NextPrime returns the smallest prime ≥ n that is an allowed table size, or
// 0 if there is none (n > MaxSize).
func NextPrime(n uint32) uint32 {
	if n > MaxSize {
		return 0
	}
	for n = max(n, MinSize); !isPrime(n); n++ {
	}
	return n
}

// prevPrime returns the largest allowed table size ≤ n, or MinSize.
func prevPrime(n uint32) uint32 {
	for n = min(n, MaxSize); n > MinSize && !isPrime(n); n-- {
	}
	return max(n, MinSize)
}

// isPrime tests n by trial division: at most about 2,000 divisions for the
// sizes allowed here.
func isPrime(n uint32) bool {
	if n < 2 {
		return false
	}
	if n%2 == 0 || n%3 == 0 {
		return n == 2 || n == 3
	}
	for d := uint64(5); d*d <= uint64(n); d += 6 {
		if uint64(n)%d == 0 || uint64(n)%(d+2) == 0 {
			return false
		}
	}
	return true
}
