package status

import "strings"

// acceptsGzip reports whether Accept-Encoding header values let the
// response be gzipped (RFC 9110, section 12.5.3): gzip is named with a
// weight above zero, or, not named, "*" is. An element that cannot be read
// counts for nothing, so a garbled header gets the plain document.
func acceptsGzip(values []string) bool {
	gzipQ, starQ := -1, -1 // weights in thousandths; -1 when not named
	for _, v := range values {
		for elem := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(elem, ";")
			q, ok := weight(params)
			if !ok {
				continue
			}
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "gzip", "x-gzip":
				gzipQ = max(gzipQ, q)
			case "*":
				starQ = max(starQ, q)
			}
		}
	}
	if gzipQ >= 0 {
		return gzipQ > 0
	}
	return starQ > 0
}

// weight reads the q parameter of an Accept-Encoding element, in
// thousandths: 1000 when absent.
func weight(params string) (int, bool) {
	q := 1000
	for p := range strings.SplitSeq(params, ";") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "q") {
			continue // an extension parameter: ignored
		}
		n, ok := qvalue(strings.TrimSpace(v))
		if !ok {
			return 0, false
		}
		q = n
	}
	return q, true
}

// qvalue reads ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ).
func qvalue(s string) (int, bool) {
	if s == "" || (s[0] != '0' && s[0] != '1') {
		return 0, false
	}
	whole, frac := int(s[0]-'0'), s[1:]
	if frac == "" {
		return whole * 1000, true
	}
	if frac[0] != '.' || len(frac) > 4 {
		return 0, false
	}
	n, scale := 0, 100
	for _, c := range frac[1:] {
		if c < '0' || c > '9' || (whole == 1 && c != '0') {
			return 0, false
		}
		n += int(c-'0') * scale
		scale /= 10
	}
	return whole*1000 + n, true
}
