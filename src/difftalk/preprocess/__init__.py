"""Raw video + audio → one clip folder per video (stage ②): offline, resumable, skip-if-done."""
