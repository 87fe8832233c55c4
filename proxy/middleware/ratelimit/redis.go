package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// gcraScript is one decision in Redis, atomic because Redis runs a script
// alone. It grants up to ARGV[3] requests of a GCRA bucket (TAT in µs of
// Redis's own clock, so proxies' clocks do not matter) and returns
// {granted, µs until full, µs until one more would be granted, remaining}
// (Redis truncates them to integers; the TAT it stores keeps fractions).
// The key expires when its TAT passes: an expired key is a full bucket.
const gcraScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local free = math.floor((tau - (tat - now)) / interval)
if free < 1 then
  return {0, tat - now, tat + interval - tau - now, 0}
end
local g = want
if g > free then g = free end
tat = tat + g * interval
redis.call('SET', KEYS[1], tat, 'PX', math.ceil((tat - now) / 1000))
return {g, tat - now, 0, free - g}
`

var script = redis.NewScript(gcraScript)

// errRedisBackoff: Redis failed recently and is not asked until the backoff
// ends.
var errRedisBackoff = errors.New("redis failed recently; not asked during backoff")

// redisStore keeps what this proxy holds of each shared key: a lease of
// requests Redis granted and this proxy may admit without asking, or the
// instant before which Redis said no. Packed in one int64 of the table:
// deadline in ms since epoch << 20 | requests left (batch ≤ 1e6 < 2^20).
type redisStore struct {
	client    *redis.Client
	cfg       *RedisConfig
	leases    *table
	downUntil atomic.Int64 // monoNow before which Redis is not asked
}

const leaseBits = 20

func packLease(deadline, left int64) int64 {
	return (deadline/int64(time.Millisecond))<<leaseBits | left
}
func leaseDeadline(v int64) int64    { return (v >> leaseBits) * int64(time.Millisecond) }
func leaseLeft(v int64) int64        { return v & (1<<leaseBits - 1) }
func leaseExpired(v, now int64) bool { return leaseDeadline(v) <= now }

// quietRedis stops go-redis printing its own lines (process-wide: its
// logger is a package variable); failures reach the proxy's log through
// the limiter, throttled.
var quietRedis sync.Once

type discardRedisLog struct{}

func (discardRedisLog) Printf(context.Context, string, ...any) {}

func newRedisStore(c *RedisConfig, maxKeys int) *redisStore {
	quietRedis.Do(func() { redis.SetLogger(discardRedisLog{}) })
	client := redis.NewClient(&redis.Options{
		Addr:                  c.Address,
		DB:                    c.DB,
		MaxRetries:            -1, // the limiter decides what a failure means
		DialTimeout:           c.Timeout.D(),
		DialerRetries:         1,
		ReadTimeout:           c.Timeout.D(),
		WriteTimeout:          c.Timeout.D(),
		ContextTimeoutEnabled: true,
		PoolTimeout:           c.Timeout.D(),
	})
	return &redisStore{client: client, cfg: c, leases: newTable(maxKeys, leaseExpired)}
}

// take decides one request of key k (hash h) under rule ru: from the local
// lease or cached refusal when there is one, else by one round trip that
// reserves up to Batch requests.
func (s *redisStore) take(ctx context.Context, h uint64, k *key, ru *rule, now int64) (verdict, error) {
	var v verdict
	hit := false
	s.leases.update(h, now, func(cur int64, found bool) (int64, bool) {
		if !found || leaseExpired(cur, now) {
			return cur, false
		}
		hit = true
		left := leaseLeft(cur)
		if left == 0 {
			v = verdict{retry: time.Duration(leaseDeadline(cur) - now), reset: ru.per}
			return cur, true
		}
		v = verdict{allowed: true, remaining: left - 1, reset: ru.per}
		return cur - 1, left > 1
	})
	if hit {
		return v, nil
	}
	if now < s.downUntil.Load() {
		return v, errRedisBackoff
	}
	want := s.cfg.Batch
	if want > ru.burst {
		want = ru.burst
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout.D())
	defer cancel()
	// µs as decimals: a rate above 10^6/s has a sub-µs interval.
	res, err := script.Run(ctx, s.client, []string{k.shared(s.cfg.Prefix)},
		micros(ru.interval), micros(ru.tau), want).Int64Slice()
	if err == nil && len(res) != 4 {
		err = fmt.Errorf("script returned %d values, want 4", len(res))
	}
	if err != nil {
		s.downUntil.Store(monoNow() + int64(s.cfg.Backoff.D()))
		return v, fmt.Errorf("redis %s: %w", s.cfg.Address, err)
	}
	granted, reset, retry, remaining := res[0], res[1]*1000, res[2]*1000, res[3]
	if granted == 0 {
		s.leases.update(h, now, func(int64, bool) (int64, bool) { return packLease(now+retry, 0), true })
		return verdict{retry: time.Duration(retry), reset: time.Duration(reset)}, nil
	}
	if granted > 1 {
		// The lease lasts one window: unused requests are given up then.
		s.leases.update(h, now, func(cur int64, found bool) (int64, bool) {
			left := granted - 1
			if found && !leaseExpired(cur, now) {
				left += leaseLeft(cur)
			}
			return packLease(now+int64(ru.per), min(left, 1<<leaseBits-1)), true
		})
	}
	return verdict{allowed: true, remaining: remaining + granted - 1, reset: time.Duration(reset)}, nil
}

func micros(ns int64) string { return strconv.FormatFloat(float64(ns)/1000, 'f', -1, 64) }
