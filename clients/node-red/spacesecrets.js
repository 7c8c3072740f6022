/**
 * Node-RED node "spacesecrets" (palette label "secret manager").
 *
 * Reads the SECRETS and SECRETS_METADATA documents that the spacesecrets operator projects into
 * a volume mounted in the flow's pod, and puts them in global context as `SECRETS` and
 * `SECRETS_METADATA`, on deploy (sync on save) and on an autosync schedule.
 *
 * Kubelet replaces such a volume by swapping the `..data` symlink to a new hidden directory; the
 * visible files are symlinks through `..data`. Reading the two visible names one after the other
 * could pair documents of two versions, so `..data` is resolved once, both files are read from
 * that directory, and the link is checked again afterwards (retrying when it moved).
 *
 * "Sync now" (the button in the editor) POSTs to the admin endpoint SYNC_ROUTE, which reads the
 * documents again at once and answers with what the status then shows.
 *
 * Statuses, warnings, logs and the admin endpoint's answers name files and versions, never values.
 */
"use strict";

const fs = require("fs");
const path = require("path");

const DEFAULT_PATH = "/etc/spacesecrets";
const SECRETS_FILE = "SECRETS";
const METADATA_FILE = "SECRETS_METADATA";
const DATA_LINK = "..data";
const READ_ATTEMPTS = 20;
// The autosync choices, generated from the operator's one table (`make crds`; a test compares).
const AUTOSYNC = require("./autosync.json");
const AUTOSYNC_SECONDS = AUTOSYNC.seconds;
const DEFAULT_AUTOSYNC = AUTOSYNC.default;
/** For tests only: overrides the autosync interval of every instance, in seconds. */
const AUTOSYNC_ENV = "SPACESECRETS_AUTOSYNC_SECONDS";
/** The editor's "Sync now" button (spacesecrets.html) POSTs here, like the inject node's button. */
const SYNC_ROUTE = "/spacesecrets/:id/sync";
const SYNC_PERMISSION = "spacesecrets.write";

/** Every instance deployed in this runtime, oldest first; only the oldest syncs. */
const instances = [];

class ReadError extends Error {}

function readLinkOrNull(linkPath) {
    return fs.promises.readlink(linkPath).catch(() => null);
}

async function readFileIn(directory, name) {
    try {
        return await fs.promises.readFile(path.join(directory, name));
    } catch (err) {
        if (err.code === "ENOENT") {
            const missing = new ReadError(`${name} is missing`);
            missing.missing = true;
            throw missing;
        }
        throw new ReadError(`${name} cannot be read (${err.code || "error"})`);
    }
}

function parseObject(name, raw) {
    const text = raw.toString("utf8");
    if (text.trim() === "") {
        throw new ReadError(`${name} is empty`);
    }
    let document;
    try {
        document = JSON.parse(text);
    } catch (err) {
        // Not err.message: V8 quotes the offending text, which is the secret itself.
        throw new ReadError(`${name} is not valid JSON`);
    }
    if (document === null || typeof document !== "object" || Array.isArray(document)) {
        throw new ReadError(`${name} is not a JSON object`);
    }
    return document;
}

function parsePair(secretsRaw, metadataRaw) {
    const secrets = parseObject(SECRETS_FILE, secretsRaw);
    const metadata = parseObject(METADATA_FILE, metadataRaw);
    if (!Number.isInteger(metadata.version)) {
        throw new ReadError(`${METADATA_FILE} has no integer version`);
    }
    if (metadata.version < 1) {
        throw new ReadError(`${METADATA_FILE} version must be at least 1`);
    }
    const keys = metadata.keys === undefined ? {} : metadata.keys;
    if (keys === null || typeof keys !== "object" || Array.isArray(keys)) {
        throw new ReadError(`${METADATA_FILE} field keys is not an object of objects`);
    }
    return { secrets, metadata };
}

/**
 * Read both documents of one version from `directory`.
 * Resolves to {secrets, metadata}; rejects with a ReadError whose message is safe to show.
 */
async function readDocuments(directory) {
    const dataLink = path.join(directory, DATA_LINK);
    for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
        const target = await readLinkOrNull(dataLink);
        if (target === null) {
            // Not kubelet's layout (local development, a copied directory): read as-is.
            let stat;
            try {
                stat = await fs.promises.stat(directory);
            } catch (err) {
                throw new ReadError(`directory ${directory} does not exist`);
            }
            if (!stat.isDirectory()) {
                throw new ReadError(`${directory} is not a directory`);
            }
            const secretsRaw = await readFileIn(directory, SECRETS_FILE);
            const metadataRaw = await readFileIn(directory, METADATA_FILE);
            return parsePair(secretsRaw, metadataRaw);
        }
        const resolved = path.resolve(directory, target);
        let secretsRaw;
        let metadataRaw;
        try {
            secretsRaw = await readFileIn(resolved, SECRETS_FILE);
            metadataRaw = await readFileIn(resolved, METADATA_FILE);
        } catch (err) {
            // Kubelet may have removed that version after swapping: only a file missing from
            // the current version is an error.
            if (err.missing && (await readLinkOrNull(dataLink)) !== target) {
                continue;
            }
            throw err;
        }
        if ((await readLinkOrNull(dataLink)) !== target) {
            continue;
        }
        return parsePair(secretsRaw, metadataRaw);
    }
    throw new ReadError(`${SECRETS_FILE} kept changing while being read`);
}

/** Autosync interval in milliseconds: the test override, else the configured choice. */
function autosyncMillis(autosync, env) {
    const override = env[AUTOSYNC_ENV];
    if (override !== undefined && override !== "") {
        const seconds = Number(override);
        if (Number.isFinite(seconds) && seconds > 0) {
            return seconds * 1000;
        }
    }
    const seconds = AUTOSYNC_SECONDS[autosync] || AUTOSYNC_SECONDS[DEFAULT_AUTOSYNC];
    return seconds * 1000;
}

function isEnabled(value, fallback) {
    if (value === undefined || value === null || value === "") {
        return fallback;
    }
    return value === true || value === "true";
}

module.exports = function (RED) {
    function SpaceSecretsNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        node.path = config.path || DEFAULT_PATH;
        node.autosync = Object.prototype.hasOwnProperty.call(AUTOSYNC_SECONDS, config.autosync)
            ? config.autosync
            : DEFAULT_AUTOSYNC;
        node.syncOnSave = isEnabled(config.syncOnSave, true);
        node.followVolume = isEnabled(config.followVolume, true);
        const directory = path.resolve(node.path);
        const intervalMs = autosyncMillis(node.autosync, process.env);
        const global = node.context().global;

        let closed = false;
        let active = false;
        let timer = null;
        let watcher = null;
        let reading = null;
        let lastProblem = null;
        // A redeploy recreates this node; global context keeps what the previous instance read.
        const previous = global.get("SECRETS_METADATA");
        let syncedVersion = previous && Number.isInteger(previous.version) ? previous.version : null;

        if (config.autosync && config.autosync !== node.autosync) {
            node.warn(`unknown autosync "${config.autosync}", using ${DEFAULT_AUTOSYNC}`);
        }

        async function sync() {
            try {
                const { secrets, metadata } = await readDocuments(directory);
                if (closed || !active) {
                    return;
                }
                global.set("SECRETS", secrets);
                global.set("SECRETS_METADATA", metadata);
                syncedVersion = metadata.version;
                lastProblem = null;
                const text = `🆗 Synced v${metadata.version}`;
                node.status({ fill: "green", shape: "dot", text });
                return { synced: true, version: syncedVersion, status: text };
            } catch (err) {
                if (closed || !active) {
                    return;
                }
                const problem = err instanceof ReadError ? err.message : "unexpected read failure";
                const kept = syncedVersion === null ? "" : ` (keeping v${syncedVersion})`;
                node.status({ fill: "red", shape: "ring", text: problem + kept });
                if (problem !== lastProblem) {
                    node.warn(`${problem}; keeping the previous SECRETS and SECRETS_METADATA`);
                    lastProblem = problem;
                }
                return { synced: false, version: syncedVersion, status: problem + kept };
            }
        }

        /** Start a sync unless one is under way (a deploy and a tick can coincide). */
        function requestSync() {
            if (reading === null) {
                reading = sync().finally(() => {
                    reading = null;
                });
            }
            return reading;
        }

        /**
         * "Sync now": a read that starts after the request, since one under way may have begun
         * before the files changed. Resolves to what the status then shows (names and versions
         * only), or undefined when this node does not sync (a duplicate, or closed).
         */
        node.syncNow = function () {
            if (!active || closed) {
                return Promise.resolve(undefined);
            }
            const under = reading === null ? Promise.resolve() : reading;
            return under.then(() => (active && !closed ? requestSync() : undefined));
        };

        /**
         * Follow the volume: kubelet swaps `..data` when the operator has issued a new version
         * (at the flow's autosync tick, on a save or a Sync now), so a change in the directory is
         * read at once instead of at this node's next tick. Where the directory cannot be watched
         * (missing yet, no inotify), the interval alone reads it, and the watch is tried again at
         * each tick.
         */
        function watchVolume() {
            if (!node.followVolume || watcher !== null || closed || !active) {
                return;
            }
            try {
                watcher = fs.watch(directory, { persistent: false }, () => node.syncNow());
            } catch (err) {
                watcher = null;
                return;
            }
            watcher.on("error", () => {
                unwatchVolume();
            });
        }

        function unwatchVolume() {
            if (watcher !== null) {
                watcher.close();
                watcher = null;
            }
        }

        function onTick() {
            watchVolume();
            requestSync();
        }

        function onFlowsStarted() {
            // Any kind of deploy ("full", "flows", "nodes") is a save of the flow.
            if (active && node.syncOnSave) {
                requestSync();
            }
        }

        node.startSyncing = function () {
            if (active || closed) {
                return;
            }
            active = true;
            timer = setInterval(onTick, intervalMs);
            watchVolume();
            if (node.syncOnSave || global.get("SECRETS") === undefined) {
                // A fresh runtime needs secrets even when saves do not sync.
                requestSync();
            } else {
                node.status({ fill: "grey", shape: "ring", text: "waiting for autosync" });
            }
        };

        if (instances.length > 0) {
            const first = instances[0];
            node.warn(
                `another secret manager node (${first.id}) is already deployed; ` +
                    "only one is used per runtime, this one stays idle"
            );
            node.status({ fill: "yellow", shape: "ring", text: "⚠ duplicate secret manager" });
            instances.push(node);
        } else {
            instances.push(node);
            node.startSyncing();
        }
        RED.events.on("flows:started", onFlowsStarted);

        node.on("close", function (removed, done) {
            closed = true;
            active = false;
            if (timer !== null) {
                clearInterval(timer);
                timer = null;
            }
            unwatchVolume();
            RED.events.removeListener("flows:started", onFlowsStarted);
            const index = instances.indexOf(node);
            if (index !== -1) {
                instances.splice(index, 1);
            }
            // A partial deploy may remove the active instance and keep an idle one.
            if (index === 0 && instances.length > 0) {
                instances[0].startSyncing();
            }
            done();
        });
    }

    RED.nodes.registerType("spacesecrets", SpaceSecretsNode);

    // The editor's "Sync now" button, as the inject node's: 404 for a node that is not deployed,
    // 409 for one that stays idle (a duplicate), else what its status shows after the read.
    RED.httpAdmin.post(SYNC_ROUTE, RED.auth.needsPermission(SYNC_PERMISSION), function (req, res) {
        const node = RED.nodes.getNode(req.params.id);
        if (node === null || node.type !== "spacesecrets" || typeof node.syncNow !== "function") {
            res.sendStatus(404);
            return;
        }
        node.syncNow().then(
            (result) => {
                if (result === undefined) {
                    res.status(409).json({ status: "idle: another secret manager node is used" });
                } else {
                    res.json(result);
                }
            },
            () => res.sendStatus(500),
        );
    });
};

// Exposed for tests.
module.exports.readDocuments = readDocuments;
module.exports.autosyncMillis = autosyncMillis;
module.exports.SYNC_ROUTE = SYNC_ROUTE;
