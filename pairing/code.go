package pairing

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Short codes: an invite a person can read aloud, such as
// "7-violet-canyon-ember-river". The number names the invite among the
// hub's open code invites (it is not secret); the four words are
// CodeSecretSize random bytes, one word of codeWords per byte: 32 bits.
// That is few enough to guess offline in seconds, so the code is never
// sent nor hashed in a way anyone can test: it is the password of a
// CPace exchange (pairing/cpace, docs/PROTOCOL.md "Pairing by code"),
// where each run tests one guess, and the hub burns an invite after
// MaxWrongCodes wrong ones.

// CodeSecretSize is the number of secret bytes (words) in a code.
const CodeSecretSize = 4

// MaxWrongCodes is how many wrong answers burn a code invite.
const MaxWrongCodes = 3

// MaxCodeNumber bounds the invite number of a code.
const MaxCodeNumber = 9999

// codeWords has 256 words, so that a byte picks one. They are distinct
// in their first four letters, lower case, and between 3 and 8 letters.
var codeWords = [256]string{
	"acorn", "amber", "anchor", "apple", "arrow", "aspen", "atlas", "autumn", "badge",
	"bagel", "bamboo", "banjo", "barley", "basil", "beacon", "beaver", "berry", "birch",
	"bison", "blanket", "blossom", "bonfire", "border", "bottle", "breeze", "brick",
	"bridge", "bronze", "brook", "bubble", "bucket", "buffalo", "butter", "cactus", "camel",
	"candle", "canoe", "canyon", "carbon", "carpet", "castle", "cedar", "cello", "chalk",
	"cherry", "chess", "chimney", "cider", "circus", "citrus", "clover", "cobalt",
	"coconut", "comet", "copper", "coral", "cotton", "cougar", "crater", "crayon",
	"cricket", "crystal", "cupboard", "dahlia", "daisy", "dancer", "delta", "desert",
	"diamond", "dolphin", "donkey", "dragon", "dune", "eagle", "echo", "eclipse", "ember",
	"emerald", "engine", "falcon", "fennel", "fern", "fiddle", "fig", "finch", "fjord",
	"flame", "flute", "forest", "fossil", "fountain", "fox", "galaxy", "garden", "garlic",
	"gecko", "geyser", "ginger", "glacier", "globe", "goblet", "granite", "grape", "gravel",
	"guitar", "hammock", "harbor", "harvest", "hazel", "heron", "hickory", "honey",
	"horizon", "hornet", "iceberg", "igloo", "indigo", "iris", "island", "ivory", "jacket",
	"jaguar", "jasmine", "jelly", "jigsaw", "jungle", "kayak", "kettle", "kiwi", "koala",
	"ladder", "lagoon", "lantern", "lava", "lemon", "lentil", "lily", "lion", "lobster",
	"lotus", "lunar", "magnet", "mango", "maple", "marble", "meadow", "melon", "meteor",
	"mint", "mirror", "mosaic", "moss", "mountain", "muffin", "nectar", "needle", "nest",
	"noodle", "nutmeg", "oasis", "ocean", "olive", "onion", "orbit", "orchid", "otter",
	"owl", "paddle", "panda", "papaya", "parrot", "pebble", "pepper", "piano", "pigeon",
	"pillow", "pine", "planet", "plum", "pocket", "polar", "pony", "poppy", "prairie",
	"pretzel", "puffin", "pumpkin", "quartz", "quilt", "rabbit", "radish", "rain", "raven",
	"reef", "ribbon", "river", "robin", "rocket", "rose", "ruby", "saddle", "saffron",
	"salmon", "sandal", "sapphire", "satin", "scarf", "seal", "sequoia", "shadow", "shell",
	"sierra", "silver", "sketch", "sled", "snow", "sparrow", "spider", "spruce", "squash",
	"star", "stone", "storm", "sugar", "summit", "sun", "swan", "tango", "teapot",
	"thistle", "thunder", "tiger", "timber", "toast", "tomato", "topaz", "tornado", "tulip",
	"tundra", "turtle", "umbrella", "valley", "velvet", "violet", "volcano", "waffle",
	"walnut", "walrus", "willow", "window", "winter", "wolf", "yogurt", "zebra", "zephyr",
	"zinc",
}

var wordIndex = func() map[string]byte {
	m := make(map[string]byte, len(codeWords))
	for i, w := range codeWords {
		m[w] = byte(i)
	}
	return m
}()

// Code is a parsed short code.
type Code struct {
	Number uint32
	Secret [CodeSecretSize]byte
}

// NewCodeSecret draws a code's secret.
func NewCodeSecret() [CodeSecretSize]byte {
	var s [CodeSecretSize]byte
	rand.Read(s[:]) // never fails (crypto/rand, Go 1.24 and later)
	return s
}

// String is the code as people read it: NUMBER-WORD-WORD-WORD-WORD.
func (c Code) String() string {
	var b strings.Builder
	b.WriteString(strconv.FormatUint(uint64(c.Number), 10))
	for _, x := range c.Secret {
		b.WriteByte('-')
		b.WriteString(codeWords[x])
	}
	return b.String()
}

// ErrBadCode marks a code that does not parse.
var ErrBadCode = errors.New("not a pairing code")

// ParseCode reads a code as a person may type it: any case, words
// separated by '-', spaces or both.
func ParseCode(s string) (Code, error) {
	parts := strings.FieldsFunc(strings.ToLower(strings.TrimSpace(s)), func(r rune) bool { return r == '-' || r == ' ' || r == '\t' })
	if len(parts) != 1+CodeSecretSize {
		return Code{}, fmt.Errorf("%w: %q has %d parts; a code is a number and %d words, like 7-violet-canyon-ember-river", ErrBadCode, s, len(parts), CodeSecretSize)
	}
	n, err := strconv.ParseUint(parts[0], 10, 32)
	if err != nil || n < 1 || n > MaxCodeNumber {
		return Code{}, fmt.Errorf("%w: it starts with %q, not a number from 1 to %d", ErrBadCode, parts[0], MaxCodeNumber)
	}
	c := Code{Number: uint32(n)}
	for i, w := range parts[1:] {
		x, ok := wordIndex[w]
		if !ok {
			return Code{}, fmt.Errorf("%w: %q is not one of the code words; check the code with the hub's owner", ErrBadCode, w)
		}
		c.Secret[i] = x
	}
	return c, nil
}
