package gateway

import "testing"

func TestMarkdownImageBefore(t *testing.T) {
	for text, want := range map[string]bool{
		`Here it is.\n\n![image](http://gw/images/a.png)`: true,
		`![](http://gw/images/a.png)`:                     true,
		`see [the link](http://gw/images/a.png)`:          false,
		`![a\nb](http://gw/images/a.png)`:                 false,
		`![a] and [b](http://gw/images/a.png)`:            false,
	} {
		end := len(text) - len(`(http://gw/images/a.png)`) - 1
		if got := markdownImageBefore([]byte(text), end); got != want {
			t.Errorf("%s: %v, want %v", text, got, want)
		}
	}
}
