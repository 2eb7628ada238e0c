// Package failover is the failover manager.
package failover
