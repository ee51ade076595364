// Package failover decides which unit of a pair owns each stream and hands streams over.
package failover
