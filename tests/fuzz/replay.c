/* replay.c - a main() for the harnesses without libFuzzer: feeds them files (the committed
 * corpus and regressions), so every crash ever found is re-run by the ordinary test pass. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#define REPLAY_MAX_INPUT (4u << 20) /* larger files are not inputs we ever committed */

/* Feeds the file at path to the harness. Returns 0, or -1 when it cannot be read. */
static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	size_t n = 0;
	int rc = -1;

	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		goto out;
	}
	if (!(buf = malloc(REPLAY_MAX_INPUT + 1))) {
		fprintf(stderr, "replay: out of memory\n");
		goto out;
	}
	n = fread(buf, 1, REPLAY_MAX_INPUT + 1, f);
	if (ferror(f) || n > REPLAY_MAX_INPUT) {
		fprintf(stderr, "replay: %s: unreadable or over %u bytes\n", path,
			REPLAY_MAX_INPUT);
		goto out;
	}
	fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
	/* An exact-size copy, so reading past the end is caught by ASan as under libFuzzer. */
	{
		unsigned char *exact = malloc(n ? n : 1);

		if (!exact)
			goto out;
		memcpy(exact, buf, n);
		LLVMFuzzerTestOneInput(exact, n);
		free(exact);
	}
	rc = 0;
out:
	free(buf);
	if (f)
		fclose(f);
	return rc;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays every regular file in dir, in name order. Adds to *count. Returns 0 or -1. */
static int replay_dir(const char *dir, size_t *count)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL, path[4096];
	size_t n = 0, cap = 0;
	int rc = -1;

	if (!d) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue; /* ., .. and .gitkeep */
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			char **p = realloc(names, ncap * sizeof(*p));

			if (!p)
				goto out;
			names = p;
			cap = ncap;
		}
		if (!(names[n] = strdup(e->d_name)))
			goto out;
		n++;
	}
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		if (replay_file(path) != 0)
			goto out;
		(*count)++;
	}
	rc = 0;
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return rc;
}

int main(int argc, char **argv)
{
	size_t count = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|DIR...\n"
				"Feeds each file (each file of each directory) to the harness.\n",
			argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		if (S_ISDIR(st.st_mode)) {
			if (replay_dir(argv[i], &count) != 0)
				return 1;
		} else {
			if (replay_file(argv[i]) != 0)
				return 1;
			count++;
		}
	}
	/* An empty run proves nothing: the corpus at least must be there. */
	if (count == 0) {
		fprintf(stderr, "replay: no input files\n");
		return 1;
	}
	fprintf(stderr, "replay: %zu inputs, no failure\n", count);
	return 0;
}
