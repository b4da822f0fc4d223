package kv

// Active expiry, as Redis 7 does it (src/expire.c): scan the index from a
// cursor that persists across rounds and cycles, look at
// expireKeysPerRound keys that have an expiry (visiting at most
// expireMaxVisit slots), and repeat while more than expireStalePct percent
// of them had expired. expireMaxRounds bounds a shard's work per cycle
// where Redis bounds its time.
const (
	expireKeysPerRound = 20
	expireMaxVisit     = 20 * expireKeysPerRound
	expireStalePct     = 10
	expireMaxRounds    = 256
)

// expireCycle runs the active-expiry rounds of one shard, taking the lock
// per round.
func (s *shard) expireCycle(now int64) {
	for range expireMaxRounds {
		s.mu.Lock()
		sampled, expired := s.expireRound(now)
		s.mu.Unlock()
		if sampled == 0 || expired*100 <= sampled*expireStalePct {
			return
		}
	}
}

// expireRound samples keys with an expiry from the cursor onwards and
// removes the expired ones.
func (s *shard) expireRound(now int64) (sampled, expired int) {
	if s.expires == 0 {
		return 0, 0
	}
	mask := len(s.slots) - 1
	i := s.expireCursor & mask
	for visited := 0; visited < expireMaxVisit && sampled < expireKeysPerRound; visited++ {
		sl := s.slots[i]
		if sl == 0 {
			i = (i + 1) & mask
			continue
		}
		e := s.decode(sl & s.locMask)
		x := e.exp()
		if x == 0 {
			i = (i + 1) & mask
			continue
		}
		sampled++
		if x <= now {
			// The deletion shifts the cluster back: look at
			// slot i again.
			s.expire(i, e)
			expired++
			continue
		}
		i = (i + 1) & mask
	}
	s.expireCursor = i
	return sampled, expired
}
