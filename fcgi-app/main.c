/* main.c: the keywarden command: parses a command line and dispatches it; serving FastCGI is here, the operator's commands are in cli.c. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "kw.h"

static int serve(const struct kw_cli_opts *);

/*
 * The commands.  opts names the options a command takes (letters of the
 * long options below); the synopsis and help are what --help prints and
 * what man/keywarden.8 says at more length.
 */
static const struct command {
	const char *name;
	const char *opts;
	int min_args, max_args;
	int (*run)(const struct kw_cli_opts *);
	const char *synopsis;
	const char *summary;
	const char *help;
} commands[] = {
	{ "serve", "dspw", 0, 0, serve,
	    "[-d DATA_DIR] [-s PATH | -p [HOST:]PORT] [-w WORKERS]",
	    "answer FastCGI requests with a pool of workers (the default)",
	    "The listening socket is fd 0 when a web server or spawn-fcgi starts\n"
	    "keywarden; -s listens on a Unix socket, -p on a TCP port (host 127.0.0.1\n"
	    "unless given).  The data directory is created on first start.  A data\n"
	    "directory of an older schema is migrated first; one of a newer schema is\n"
	    "refused and keywarden exits 1." },
	{ "init", "d", 0, 0, kw_cli_init, "[-d DATA_DIR]",
	    "create the data directory, its secrets and its store",
	    "Creates DATA_DIR (0700) with data.key, signing.key and, unless\n"
	    "KEYWARDEN_MASTER_KEY is set, master.key (0600), and the store.  A newly\n"
	    "generated master key is printed once.  Safe to run again: what exists\n"
	    "is kept, and an older schema is migrated." },
	{ "master-key show", "d", 0, 0, kw_cli_master_key_show, "[-d DATA_DIR]",
	    "print the master key",
	    "Prints the master key on standard output: KEYWARDEN_MASTER_KEY when it\n"
	    "is set, else DATA_DIR/master.key.  The one place keywarden shows it.\n"
	    "When a running keywarden accepts another key (one set in its own\n"
	    "environment, which this command cannot read), says so and exits 1." },
	{ "master-key rotate", "dg", 0, 0, kw_cli_master_key_rotate,
	    "[-d DATA_DIR] [--grace SECONDS]",
	    "replace the master key with a new random one",
	    "Writes a new random key to DATA_DIR/master.key (0600, replaced atomically)\n"
	    "and prints it once.  A running keywarden refuses the old key from its next\n"
	    "request on, or after --grace SECONDS (up to 604800); no restart is needed.\n"
	    "Refused when KEYWARDEN_MASTER_KEY is set in this environment or in\n"
	    "keywarden.conf, or when the running keywarden takes it from its own\n"
	    "environment (it ignores master.key then): the operator owns it." },
	{ "signing-key show", "d", 0, 0, kw_cli_signing_key_show, "[-d DATA_DIR]",
	    "list the signing keys' ids, never their secrets",
	    "Lists the ids of the keys in DATA_DIR/signing.key, oldest first, marking\n"
	    "the current one (it signs new provisioned tokens; the others still verify)\n"
	    "and the time of the last rotation." },
	{ "signing-key rotate", "d", 0, 0, kw_cli_signing_key_rotate, "[-d DATA_DIR]",
	    "make a new signing key current",
	    "A new key signs provisioned tokens from now on; tokens the old keys signed\n"
	    "verify until they expire.  Running workers notice at their next token." },
	{ "admin-key create", "dau", 0, 0, kw_cli_admin_key_create,
	    "[-d DATA_DIR] [--alias ALIAS] [--user-id USER]",
	    "create a proxy_admin key and print it once",
	    "Creates a key whose user (USER, default keywarden-admin) has the role\n"
	    "proxy_admin, through the same key model as POST /key/generate: stored\n"
	    "durably under its hash, audited as created by keywarden-cli.  The user is\n"
	    "created when missing; a user with another role is refused.  The key is\n"
	    "printed on standard output, the one time it is shown." },
	{ "backup", "d", 1, 1, kw_cli_backup, "[-d DATA_DIR] BACKUP_DIR",
	    "copy the data directory while it serves",
	    "An online backup into BACKUP_DIR, new or empty: Berkeley DB's hot backup of\n"
	    "the databases then the log files, recovered so the copy is consistent, then\n"
	    "data.key, signing.key, master.key and keywarden.conf (0600).  Safe while\n"
	    "keywarden serves and writes." },
	{ "restore", "", 2, 2, kw_cli_restore, "BACKUP_DIR DATA_DIR",
	    "make a backup a data directory again",
	    "Copies BACKUP_DIR into DATA_DIR, which must be new or empty, recovers it\n"
	    "and opens it once (migrating an older schema).  A non-empty DATA_DIR is\n"
	    "refused.  Then serve with -d DATA_DIR or KEYWARDEN_DATA_DIR." },
	{ "verify", "d", 0, 0, kw_cli_verify, "[-d DATA_DIR]",
	    "check the store's structure and its key indexes",
	    "Takes a hot copy of the store in $TMPDIR (so it is safe while keywarden\n"
	    "serves), verifies every database's structure with Berkeley DB, then checks\n"
	    "that each key's alias, owner and creation index rows agree with keys.db\n"
	    "both ways.  Prints what it checked; exits 1 on any problem." },
	{ "export", "do", 0, 0, kw_cli_export, "[-d DATA_DIR] [-o FILE]",
	    "write every record as JSON lines, for import elsewhere",
	    "One consistent moment of the store, one record a line: organizations,\n"
	    "budgets, users (with their roles), teams, customers, providers, provider\n"
	    "keys (their secrets sealed, as stored), their index, and keys (Venice keys\n"
	    "among them) by token, never a plaintext key.  A header line names the data\n"
	    "key that sealed the provider secrets.  To FILE (0600, replaced atomically)\n"
	    "or standard output; progress and counts on standard error." },
	{ "import", "dkn", 0, 1, kw_cli_import,
	    "[-d DATA_DIR] [--data-key FILE] [--dry-run] [FILE]",
	    "add the records of an export",
	    "Reads an export from FILE or standard input and checks every line first:\n"
	    "any bad line is reported with its line number and field, and nothing is\n"
	    "written.  Then each record is written in its own transaction, as it was\n"
	    "stored (a key with its index rows), audited as created by keywarden-cli; a\n"
	    "record whose id exists is skipped and counted.  A missing or empty DATA_DIR\n"
	    "is initialised first; give it the source's data.key with --data-key so the\n"
	    "sealed provider secrets open there (provider keys under another data key\n"
	    "are refused).  --dry-run checks and counts what would be written, writing\n"
	    "nothing.  Lines of older exports (bare key records) are read too." },
	{ "key create", "dUjaut", 0, 0, kw_cli_manage, "[-d DATA_DIR | --url URL] [--alias A] [--user-id U] [--team-id T] [--json]",
	    "create a key (POST /key/generate) and print it once",
	    "The plaintext on standard output, the one time it is shown. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "key list", "dUjut", 0, 0, kw_cli_manage, "[-d DATA_DIR | --url URL] [--user-id U] [--team-id T] [--json]",
	    "list keys: token, alias (GET /key/list)",
	    "One key a line: its token, its alias, and blocked when it is. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "key info", "dUj", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--json] KEY",
	    "a key's settings and spend (GET /key/info)",
	    "KEY is the key or its token. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "key block", "dUj", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--json] KEY",
	    "refuse a key from its next request (POST /key/block)",
	    "KEY is the key or its token. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "key unblock", "dUj", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--json] KEY",
	    "accept a blocked key again (POST /key/unblock)",
	    "KEY is the key or its token. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "key regenerate", "dUj", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--json] KEY",
	    "a new secret for a key, its settings kept (POST /key/regenerate)",
	    "Prints the new key once; the old one is refused. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "key delete", "dUj", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--json] KEY",
	    "delete a key (POST /key/delete)",
	    "KEY is the key or its token. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "team create", "dUj", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--json] ALIAS",
	    "create a team (POST /team/new); prints its team_id",
	    "ALIAS is its team_alias. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "team list", "dUju", 0, 0, kw_cli_manage, "[-d DATA_DIR | --url URL] [--user-id U] [--json]",
	    "list teams: team_id, alias (GET /team/list)",
	    "One team a line. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "team info", "dUj", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--json] TEAM_ID",
	    "a team's settings (GET /team/info)",
	    "TEAM_ID is the team's id. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "team block", "dUj", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--json] TEAM_ID",
	    "refuse the team's keys (POST /team/update blocked)",
	    "TEAM_ID is the team's id. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "team unblock", "dUj", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--json] TEAM_ID",
	    "accept the team's keys again",
	    "TEAM_ID is the team's id. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "team delete", "dUj", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--json] TEAM_ID",
	    "delete a team (POST /team/delete)",
	    "TEAM_ID is the team's id. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "user create", "dUjr", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--role ROLE] [--json] USER_ID",
	    "create a user (POST /user/new)",
	    "ROLE is proxy_admin, proxy_admin_viewer, internal_user (the default) or\n"
	    "internal_user_viewer. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "user list", "dj", 0, 0, kw_cli_manage, "[-d DATA_DIR] [--json]",
	    "list users: user_id, role (the data directory only)",
	    "One user a line; the API has no list of users, so there is no --url.On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code." },
	{ "user info", "dUj", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--json] USER_ID",
	    "a user's settings and keys (GET /user/info)",
	    "USER_ID is the user's id. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "user block", "dUj", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--json] USER_ID",
	    "refuse the user's keys (POST /user/update blocked)",
	    "USER_ID is the user's id. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "user unblock", "dUj", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--json] USER_ID",
	    "accept the user's keys again",
	    "USER_ID is the user's id. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "user delete", "dUj", 1, 1, kw_cli_manage, "[-d DATA_DIR | --url URL] [--json] USER_ID",
	    "delete a user (POST /user/delete)",
	    "USER_ID is the user's id. On DATA_DIR as keywarden-cli, a proxy admin, through the API's own code;\n"
	    "with --url, over HTTP as the key in KEYWARDEN_API_KEY.  --json prints the answer." },
	{ "group status", "dUj", 0, 0, kw_cli_group, "[-d DATA_DIR | --url URL] [--json]",
	    "the replicated group: its sites, the master, each replica's lag",
	    "Asks the site at URL (or, with -d, the site KEYWARDEN_GROUP_SELF names in\n"
	    "KEYWARDEN_GROUP_SITES) for GET /group/status, then each member for its\n"
	    "/health: prints the master, then every site with its URL, role and how\n"
	    "many bytes of the master's log it has still to apply.  The master key\n"
	    "comes from KEYWARDEN_API_KEY, KEYWARDEN_MASTER_KEY or the data directory." },
	{ "group remove", "dUj", 1, 1, kw_cli_group, "[-d DATA_DIR | --url URL] HOST:PORT",
	    "take a site out of the replicated group",
	    "POST /group/remove: the master removes the site at HOST:PORT (its\n"
	    "replication address) from the membership, so the quorum is counted\n"
	    "without it.  Stop the site first; to bring it back, restore it from a\n"
	    "hot backup of a member and start it again (it joins anew)." },
	{ "version", "", 0, 0, kw_cli_version, "",
	    "print the version and the schema version",
	    "Prints `keywarden VERSION (schema N, spec SHA256-PREFIX)`: N is the data\n"
	    "directory schema this keywarden writes and migrates older ones to." },
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

#define FLAGS "nj"	/* the options that take no value */

static const struct option longopts[] = {
	{ "help", no_argument, NULL, 'h' },
	{ "data-dir", required_argument, NULL, 'd' },
	{ "output", required_argument, NULL, 'o' },
	{ "socket", required_argument, NULL, 's' },
	{ "port", required_argument, NULL, 'p' },
	{ "workers", required_argument, NULL, 'w' },
	{ "alias", required_argument, NULL, 'a' },
	{ "user-id", required_argument, NULL, 'u' },
	{ "data-key", required_argument, NULL, 'k' },
	{ "dry-run", no_argument, NULL, 'n' },
	{ "grace", required_argument, NULL, 'g' },
	{ "json", no_argument, NULL, 'j' },
	{ "url", required_argument, NULL, 'U' },
	{ "team-id", required_argument, NULL, 't' },
	{ "role", required_argument, NULL, 'r' },
	{ NULL, 0, NULL, 0 },
};

static const struct {
	char opt;
	const char *text;
} option_help[] = {
	{ 'd', "-d, --data-dir DATA_DIR  the data directory (KEYWARDEN_DATA_DIR, else ./var)" },
	{ 's', "-s, --socket PATH        listen on a Unix socket of keywarden's own" },
	{ 'p', "-p, --port [HOST:]PORT   listen on a TCP port of keywarden's own" },
	{ 'w', "-w, --workers N          worker processes, 1 to 256 (KEYWARDEN_WORKERS)" },
	{ 'a', "    --alias ALIAS        the key's key_alias" },
	{ 'u', "    --user-id USER       the key's proxy_admin user (keywarden-admin)" },
	{ 'o', "-o, --output FILE        write to FILE instead of standard output" },
	{ 'k', "    --data-key FILE      the source's data.key, for a new data directory" },
	{ 'n', "-n, --dry-run            check and count, write nothing" },
	{ 'g', "    --grace SECONDS      how long the old master key is still accepted (0)" },
	{ 'U', "    --url URL            a keywarden over HTTP (KEYWARDEN_URL), the key in\n"
	    "                           KEYWARDEN_API_KEY, instead of DATA_DIR" },
	{ 't', "    --team-id TEAM       the key's team" },
	{ 'r', "    --role ROLE          the user's user_role" },
	{ 'j', "    --json               print the API's answer as JSON" },
};

static void
usage(FILE *f)
{
	fprintf(f, "usage: keywarden [COMMAND] [OPTIONS] [OPERANDS]\n\n");
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  keywarden %s%s%s\n", commands[i].name,
		    commands[i].synopsis[0] ? " " : "", commands[i].synopsis);
	fprintf(f, "\n");
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  %-19s %s\n", commands[i].name, commands[i].summary);
	fprintf(f,
	    "\n`keywarden help COMMAND` or `keywarden COMMAND --help` says more; man keywarden.\n"
	    "Exit status: 0 done, 1 failed, 2 a usage error.\n"
	    "\n"
	    "Settings come from the environment, then DATA_DIR/keywarden.conf:\n"
	    "KEYWARDEN_DATA_DIR (./var), KEYWARDEN_MASTER_KEY, KEYWARDEN_WORKERS (cores),\n"
	    "KEYWARDEN_MAX_BODY (1048576), KEYWARDEN_LOG_LEVEL (info), KEYWARDEN_MAINTAIN_SECS (60),\n"
	    "KEYWARDEN_LEASE_SECS (600), KEYWARDEN_PUBLIC_URL, KEYWARDEN_PROVISION_TTL (3600),\n"
	    "KEYWARDEN_PROVISION_RPM (30), KEYWARDEN_MIN_CLIENT_VERSION, KEYWARDEN_METRICS_TOKEN,\n"
	    "KEYWARDEN_ANON_LEASE_SECS (60), KEYWARDEN_MAX_KEYS_PER_USER (1000),\n"
	    "KEYWARDEN_INFO_MAX_KEYS (100), KEYWARDEN_MAX_TEAM_MEMBERS (1000),\n"
	    "KEYWARDEN_PRIVATE_MODELS (Venice's private families), KEYWARDEN_MEDIA_MODELS,\n"
	    "KEYWARDEN_CLOCK_FILE (environment only, for tests).\n");
}

static void
command_help(FILE *f, const struct command *c)
{
	fprintf(f, "usage: keywarden %s%s%s\n\n%s.\n\n%s\n", c->name, c->synopsis[0] ? " " : "",
	    c->synopsis, c->summary, c->help);
	if (c->opts[0] != '\0') {
		fprintf(f, "\nOptions:\n");
		for (size_t i = 0; i < sizeof(option_help) / sizeof(option_help[0]); i++)
			if (strchr(c->opts, option_help[i].opt) != NULL)
				fprintf(f, "  %s\n", option_help[i].text);
	}
	fprintf(f, "\nExit status: 0 done, 1 failed, 2 a usage error.\n");
}

/*
 * The commands whose name is `word` and one more word (`key create`,
 * `key list`...), as one usage: the help of a group such as `key`.  Returns
 * how many there are; prints nothing when none, or when f is NULL (a count).
 */
static int
group_help(FILE *f, const char *word)
{
	size_t len = strlen(word);
	int found = 0;

	for (size_t i = 0; i < NCOMMANDS; i++) {
		const struct command *c = &commands[i];

		if (strncmp(c->name, word, len) != 0 || c->name[len] != ' ')
			continue;
		if (f == NULL) {
			found++;
			continue;
		}
		if (found++ == 0)
			fprintf(f, "usage: keywarden %s COMMAND [OPTIONS] [OPERANDS]\n\n", word);
		fprintf(f, "  keywarden %s%s%s\n      %s\n", c->name, c->synopsis[0] ? " " : "",
		    c->synopsis, c->summary);
	}
	if (f != NULL && found > 0)
		fprintf(f, "\n`keywarden help %s COMMAND` or `keywarden %s COMMAND --help` says more.\n"
		    "Exit status: 0 done, 1 failed, 2 a usage error.\n", word, word);
	return found;
}

/* Whether the operands hold -h or --help before a `--`. */
static int
wants_help(int argc, char **argv)
{
	for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return 1;
	return 0;
}

/*
 * Finds the command named by argv[0] (and argv[1] for a two-word command);
 * *words is how many words its name took.  NULL when there is none.
 */
static const struct command *
find_command(int argc, char **argv, int *words)
{
	char two[64];

	if (argc > 1) {
		snprintf(two, sizeof(two), "%s %s", argv[0], argv[1]);
		for (size_t i = 0; i < NCOMMANDS; i++)
			if (strcmp(commands[i].name, two) == 0) {
				*words = 2;
				return &commands[i];
			}
	}
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (strcmp(commands[i].name, argv[0]) == 0) {
			*words = 1;
			return &commands[i];
		}
	return NULL;
}

/* Says a usage error, then the command's synopsis; returns 2, the usage exit status. */
static int
usage_error(const struct command *c, const char *fmt, const char *arg)
{
	fprintf(stderr, "keywarden: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	if (c != NULL)
		fprintf(stderr, "usage: keywarden %s%s%s\n", c->name, c->synopsis[0] ? " " : "",
		    c->synopsis);
	else
		fprintf(stderr, "`keywarden help` lists the commands\n");
	return 2;
}

/*
 * Every command may hold the master key, the data key or the signing keys
 * (the pool manager and its workers all of them), so no process of
 * keywarden leaves a core dump, and none may be read by another process
 * of its user (/proc/PID/mem, ptrace): a core limit of 0 and, for the
 * kernel's own dumps and pipes to a core handler that ignore that limit,
 * not dumpable.  Both pass to the workers the pool manager forks.
 */
static void
no_core_dumps(void)
{
	struct rlimit none = { 0, 0 };

	if (setrlimit(RLIMIT_CORE, &none) != 0)
		fprintf(stderr, "keywarden: cannot disable core dumps: %s\n", strerror(errno));
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		fprintf(stderr, "keywarden: cannot make the process not dumpable: %s\n",
		    strerror(errno));
}

int
main(int argc, char **argv)
{
	static char serve_name[] = "serve";
	struct kw_cli_opts o = { 0 };
	const struct command *c;
	char optstring[32], asked[64], *name;
	int words, ch, n = 0;

	no_core_dumps();	/* before any secret is read */
	argv++;
	argc--;
	if (argc == 0 || argv[0][0] == '-') {
		/* no command: serve, as a web server starts keywarden */
		if (argc == 1 && (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0)) {
			usage(stdout);
			return 0;
		}
		if (argc == 1 && (strcmp(argv[0], "-V") == 0 || strcmp(argv[0], "--version") == 0))
			return kw_cli_version(&o);
		argv--;
		argc++;
		argv[0] = serve_name;
	}
	if (strcmp(argv[0], "help") == 0) {
		if (argc == 1) {
			usage(stdout);
			return 0;
		}
		if ((c = find_command(argc - 1, argv + 1, &words)) != NULL && words == argc - 1) {
			command_help(stdout, c);
			return 0;
		}
		if (argc == 2 && group_help(stdout, argv[1]) > 0)
			return 0;
		snprintf(asked, sizeof(asked), "%s%s%s", argv[1], argc > 2 ? " " : "",
		    argc > 2 ? argv[2] : "");
		return usage_error(NULL, "no such command: %s", asked);
	}
	if ((c = find_command(argc, argv, &words)) == NULL) {
		/* a group's name alone (`keywarden key`) is a usage error naming its commands */
		if (wants_help(argc - 1, argv + 1) && group_help(stdout, argv[0]) > 0)
			return 0;
		if (group_help(NULL, argv[0]) > 0) {
			fprintf(stderr, "keywarden: %s takes one of these commands:\n", argv[0]);
			group_help(stderr, argv[0]);
			return 2;
		}
		return usage_error(NULL, "no such command: %s", argv[0]);
	}
	if (wants_help(argc - words, argv + words)) {
		command_help(stdout, c);
		return 0;
	}

	/* the options this command takes, in getopt's spelling */
	optstring[n++] = ':';
	for (const char *p = c->opts; *p != '\0'; p++) {
		optstring[n++] = *p;
		if (strchr(FLAGS, *p) == NULL)
			optstring[n++] = ':';
	}
	optstring[n] = '\0';
	name = argv[words - 1];
	argv += words - 1;
	argc -= words - 1;
	argv[0] = name;
	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, optstring, longopts, NULL)) != -1) {
		const char *given = optind > 1 ? argv[optind - 1] : "?";

		if (ch == '?' || ch == 'h' || (ch != ':' && strchr(c->opts, ch) == NULL))
			return usage_error(c, "unknown option %s", given);
		switch (ch) {
		case ':':
			return usage_error(c, "option %s needs a value", given);
		case 'd':
			o.data_dir = optarg;
			break;
		case 'o':
			o.output = optarg;
			break;
		case 's':
			o.socket_path = optarg;
			break;
		case 'p':
			o.port = optarg;
			break;
		case 'a':
			o.alias = optarg;
			break;
		case 'u':
			o.user_id = optarg;
			break;
		case 'k':
			o.data_key = optarg;
			break;
		case 'n':
			o.dry_run = 1;
			break;
		case 'j':
			o.json = 1;
			break;
		case 'U':
			o.url = optarg;
			break;
		case 't':
			o.team_id = optarg;
			break;
		case 'r':
			o.role = optarg;
			break;
		case 'g': {
			char *end;
			long g = strtol(optarg, &end, 10);

			if (*optarg == '\0' || *end != '\0' || g < 0 || g > 604800)
				return usage_error(c, "--grace takes 0 to 604800 seconds, not %s", optarg);
			o.grace = g;
			break;
		}
		case 'w': {
			char *end;
			long w = strtol(optarg, &end, 10);

			if (*optarg == '\0' || *end != '\0' || w < 1 || w > 256)
				return usage_error(c, "-w takes 1 to 256, not %s", optarg);
			o.workers = (unsigned)w;
			break;
		}
		}
	}
	o.args = argv + optind;
	o.nargs = argc - optind;
	if (o.nargs < c->min_args)
		return usage_error(c, "%s needs more operands", c->name);
	if (o.nargs > c->max_args)
		return usage_error(c, "unexpected operand %s", o.args[c->max_args]);
	if (o.socket_path != NULL && o.port != NULL)
		return usage_error(c, "%s takes -s or -p, not both", c->name);
	if (o.url != NULL && o.data_dir != NULL)
		return usage_error(c, "%s takes -d or --url, not both", c->name);
	o.command = c->name;
	return c->run(&o);
}

/* 1 when fd is a listening socket, which is how a web server hands one over. */
static int
is_listening_socket(int fd)
{
	int v = 0;
	socklen_t len = sizeof(v);

	return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v;
}

/*
 * A request that finds every worker busy and the pool at its cap waits in
 * the listen queue until a worker is free, so the queue holds a burst of
 * the server's connections rather than refusing them (the kernel caps it at
 * net.core.somaxconn, 4096 by default).
 */
#define LISTEN_BACKLOG 4096

/* Opens the socket named by -s or -p; returns its fd or -1. */
static int
open_listener(const char *socket_path, const char *port)
{
	char addr[300];
	int fd;

	if (socket_path != NULL) {
		mode_t old = umask(0117);	/* the socket is rw for owner and group */

		unlink(socket_path);
		fd = FCGX_OpenSocket(socket_path, LISTEN_BACKLOG);
		umask(old);
		return fd;
	}
	if (strchr(port, ':') != NULL)
		snprintf(addr, sizeof(addr), "%s", port);
	else
		snprintf(addr, sizeof(addr), "127.0.0.1:%s", port);
	return FCGX_OpenSocket(addr, LISTEN_BACKLOG);
}

/*
 * Opens the store once before serving, so recovery and a migration run
 * before any worker starts.  A data directory of a newer schema is the one
 * failure that stops keywarden: no worker could serve it.  Any other
 * failure is left to the pool, whose workers answer 503 until the store
 * opens.
 */
static int
settle_store(void)
{
	struct kw_store *st;
	unsigned newer;

	if (kw_store_open(&st, kw_config.data_dir, KW_STORE_RECOVER) == KW_OK) {
		kw_store_close(st);
		return 0;
	}
	if ((newer = kw_store_refused_schema()) == 0)
		return 0;
	fprintf(stderr, "keywarden: %s has schema version %u, written by a newer keywarden; "
	    "this keywarden %s reads schema %d and older: refusing to serve it\n",
	    kw_config.data_dir, newer, KW_VERSION, KW_SCHEMA_VERSION);
	return 1;
}

static int
serve(const struct kw_cli_opts *o)
{
	int listen_fd, rc;

	/* before anything is read or created: a bare keywarden in a shell leaves no ./var */
	if (o->socket_path == NULL && o->port == NULL && !is_listening_socket(0)) {
		fprintf(stderr, "keywarden: standard input is not a FastCGI listening socket; "
		    "use -s PATH or -p PORT to listen on one of keywarden's own, or `keywarden "
		    "help` for the other commands\n");
		return 2;
	}
	if (kw_cli_setup(o->data_dir) != 0)
		return 1;
	if (o->workers > 0)
		kw_config.workers = o->workers;
	if (kw_config.max_workers != 0 && kw_config.max_workers < kw_config.workers) {
		fprintf(stderr, "keywarden: KEYWARDEN_MAX_WORKERS (%u) must be at least the "
		    "workers (%u, KEYWARDEN_WORKERS or -w)\n", kw_config.max_workers,
		    kw_config.workers);
		kw_crypto_wipe(kw_config.master_key, sizeof(kw_config.master_key));
		return 1;
	}
	if (kw_config_init_data_dir(0) != KW_OK || settle_store() != 0) {
		kw_crypto_wipe(kw_config.master_key, sizeof(kw_config.master_key));
		return 1;
	}
	kw_config_master_key_warn();
	if (FCGX_Init() != 0) {
		fprintf(stderr, "keywarden: libfcgi failed to initialise\n");
		return 1;
	}
	if (o->socket_path != NULL || o->port != NULL) {
		if ((listen_fd = open_listener(o->socket_path, o->port)) < 0) {
			fprintf(stderr, "keywarden: cannot listen on %s: %s\n",
			    o->socket_path ? o->socket_path : o->port, strerror(errno));
			return 1;
		}
	} else {
		listen_fd = 0;
	}
	kw_config_master_key_announce();
	rc = kw_pool_run(listen_fd, kw_config.workers) == KW_OK ? 0 : 1;
	kw_config_master_key_unannounce();
	if (o->socket_path != NULL)
		unlink(o->socket_path);
	kw_crypto_wipe(kw_config.master_key, sizeof(kw_config.master_key));
	return rc;
}
