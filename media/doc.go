// Package media relays live RTP streams in supervised worker processes and measures them.
package media
