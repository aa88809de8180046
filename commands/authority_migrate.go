package commands

import (
	"fmt"
	"os"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/urfave/cli/v2"
)

// migrateStoreCommand copies a SQLite authority into PostgreSQL.
func migrateStoreCommand() *cli.Command {
	return &cli.Command{
		Name:  "migrate-store",
		Usage: "copy a whole SQLite authority (data_dir/mbot.db) into an empty PostgreSQL database",
		Description: `Stop the authority first: joins recorded after the copy would be lost. Then:

   MBOT_STORAGE_DSN='postgres://mbot@db.internal/mbot?sslmode=verify-full' \
     mbot authority migrate-store --config authority.yaml

copies the CAs, resources, replay records, renewal generations, bot and
admin locks and the audit log in one transaction, and refuses a database
that already holds an authority. The CA private keys are sealed as they are
copied with the key-encryption key of ca_key_encryption.key_file (or
$MBOT_CA_KEK), which PostgreSQL storage requires: without one it refuses.
Then set storage: {type: postgres} in authority.yaml and start the replicas.`,
		Flags: []cli.Flag{authorityConfigFlag(),
			&cli.StringFlag{Name: "to-dsn", EnvVars: []string{authority.StorageDSNEnv},
				Usage: "PostgreSQL connection string to copy into (keep its password in " + authority.StorageDSNEnv + ")"}},
		Action: func(c *cli.Context) error {
			cfg, err := authority.LoadConfig(c.String("config"))
			if err != nil {
				return err
			}
			if cfg.Storage.Type != "sqlite" {
				return usagef("%s already uses %s storage; migrate-store copies from sqlite (data_dir)", c.String("config"), cfg.Storage.Type)
			}
			dsn := c.String("to-dsn")
			if dsn == "" {
				return usagef("give the PostgreSQL database to copy into: --to-dsn or %s", authority.StorageDSNEnv)
			}
			if err := store.CheckPostgresDSN(dsn); err != nil {
				return usagef("--to-dsn %v", err)
			}
			kek, err := authority.LoadKEK(cfg)
			if err != nil {
				return err
			}
			if kek == nil {
				return fmt.Errorf("%w; migrate-store seals the CA keys with it as it copies", authority.ErrPostgresWithoutKEK)
			}
			report, err := store.CopySQLiteToPostgres(c.Context, cfg.DataDir, dsn, authority.SealCAForCopy(kek))
			if err != nil {
				return fmt.Errorf("copying %s into PostgreSQL: %w", cfg.DataDir, err)
			}
			fmt.Fprintf(os.Stderr, "mbot: copied %d CAs (their keys sealed with the key from %s), %d resources, %d audit records, %d replay records, %d renewal chains, %d bot locks, %d admin locks\n",
				report.Rows["cas"], kek.Source, report.Rows["resources"], report.Rows["audit"], report.Rows["used_proofs"],
				report.Rows["bot_generations"], report.Rows["bot_locks"], report.Rows["admin_locks"])
			fmt.Fprintf(os.Stderr, "mbot: now set storage: {type: postgres} in %s (the DSN in %s), keep the same key-encryption key, and start the authority\n",
				c.String("config"), authority.StorageDSNEnv)
			return nil
		},
	}
}
