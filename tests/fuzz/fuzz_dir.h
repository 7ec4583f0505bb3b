/* fuzz_dir.h: the fuzz targets' temporary data directories. */
#ifndef FUZZ_DIR_H
#define FUZZ_DIR_H

#include <ftw.h>
#include <stdio.h>

static int
fuzz_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Removes dir and everything below it, without following links. */
static inline void
fuzz_remove_tree(const char *dir)
{
	(void)nftw(dir, fuzz_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
