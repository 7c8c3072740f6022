"use strict";

const { describe, it, before, after, beforeEach, afterEach } = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { Worker } = require("node:worker_threads");

const helper = require("node-red-node-test-helper");
const spacesecretsNode = require("../spacesecrets.js");

helper.init(require.resolve("node-red"));

const SECRET_VALUE = "s3cr3t-value-never-shown";

// -- a kubelet-like atomic writer (the same steps as kubelet's AtomicWriter) -----------------

function timestampedName() {
    const now = new Date();
    const pad = (n) => String(n).padStart(2, "0");
    const stamp =
        `${now.getUTCFullYear()}_${pad(now.getUTCMonth() + 1)}_${pad(now.getUTCDate())}_` +
        `${pad(now.getUTCHours())}_${pad(now.getUTCMinutes())}_${pad(now.getUTCSeconds())}`;
    return `..${stamp}.${String(crypto.randomInt(1e9)).padStart(9, "0")}`;
}

function writeProjection(dir, files) {
    fs.mkdirSync(dir, { recursive: true });
    const dataLink = path.join(dir, "..data");
    let oldDir = null;
    try {
        oldDir = fs.readlinkSync(dataLink);
    } catch (err) {
        if (err.code !== "ENOENT") throw err;
    }
    const oldNames = oldDir ? fs.readdirSync(path.join(dir, oldDir)) : [];
    const newDir = timestampedName();
    fs.mkdirSync(path.join(dir, newDir), { mode: 0o755 });
    for (const [name, content] of Object.entries(files)) {
        fs.writeFileSync(path.join(dir, newDir, name), content, { mode: 0o644 });
    }
    const tmpLink = path.join(dir, "..data_tmp");
    fs.rmSync(tmpLink, { force: true });
    fs.symlinkSync(newDir, tmpLink);
    fs.renameSync(tmpLink, dataLink);
    for (const name of Object.keys(files)) {
        const visible = path.join(dir, name);
        try {
            fs.lstatSync(visible);
        } catch (err) {
            fs.symlinkSync(`..data/${name}`, visible);
        }
    }
    for (const name of oldNames) {
        if (!(name in files)) fs.rmSync(path.join(dir, name), { force: true });
    }
    if (oldDir) fs.rmSync(path.join(dir, oldDir), { recursive: true, force: true });
}

function documents(version) {
    return {
        SECRETS: JSON.stringify({
            V: version,
            A_KEY: `${SECRET_VALUE}-${version}`,
            A_CONFIG: { retries: version },
        }),
        SECRETS_METADATA: JSON.stringify({
            space: "team-a",
            version: version,
            createdAt: "2026-11-29T12:00:00Z",
            updatedAt: "2026-11-29T12:00:00Z",
            issuedAt: "2026-11-29T12:00:00Z",
            autosync: "1m",
            syncOnSave: true,
            keys: {
                V: { format: "json", version: version, updatedAt: "2026-11-29T12:00:00Z" },
                A_KEY: { format: "text", version: version, updatedAt: "2026-11-29T12:00:00Z" },
                A_CONFIG: { format: "json", version: 1, updatedAt: "2026-11-29T12:00:00Z" },
            },
        }),
    };
}

// -- waiting without bare sleeps ---------------------------------------------------------------

async function waitUntil(description, predicate, timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const value = predicate();
        if (value) return value;
        if (Date.now() > deadline) {
            throw new Error(`timed out waiting for ${description}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
    }
}

function statusesOf(node) {
    return node.status
        .getCalls()
        .filter((call) => call.thisValue === node)
        .map((call) => call.args[0]);
}

function lastStatus(node) {
    const statuses = statusesOf(node);
    return statuses[statuses.length - 1];
}

function warningsOf(node) {
    return node.warn
        .getCalls()
        .filter((call) => call.thisValue === node)
        .map((call) => String(call.args[0]));
}

function loadFlow(flow) {
    return new Promise((resolve, reject) => {
        helper.load(spacesecretsNode, flow, (err) => (err ? reject(err) : resolve()));
    });
}

function spacesecretsConfig(id, dir, extra = {}) {
    return { id, type: "spacesecrets", name: "", path: dir, autosync: "1m", syncOnSave: true, ...extra };
}

// -- tests -------------------------------------------------------------------------------------

describe("spacesecrets node", () => {
    let tmp;
    let volume;

    before(() => new Promise((resolve) => helper.startServer(resolve)));
    after(() => new Promise((resolve) => helper.stopServer(resolve)));

    beforeEach(async () => {
        tmp = fs.mkdtempSync(path.join(os.tmpdir(), "spacesecrets-"));
        volume = path.join(tmp, "etc-spacesecrets");
        writeProjection(volume, documents(1));
        delete process.env.SPACESECRETS_AUTOSYNC_SECONDS;
        await helper._context.clear();
    });

    afterEach(async () => {
        await helper.unload();
        delete process.env.SPACESECRETS_AUTOSYNC_SECONDS;
        fs.rmSync(tmp, { recursive: true, force: true });
    });

    it("loads with the documented defaults", async () => {
        await loadFlow([{ id: "n1", type: "spacesecrets" }]);
        const n1 = helper.getNode("n1");
        assert.equal(n1.path, "/etc/spacesecrets");
        assert.equal(n1.autosync, "1m");
        assert.equal(n1.syncOnSave, true);
    });

    it("sets global SECRETS and SECRETS_METADATA and shows the synced version", async () => {
        await loadFlow([spacesecretsConfig("n1", volume)]);
        const n1 = helper.getNode("n1");
        const global = n1.context().global;

        await waitUntil("first sync", () => global.get("SECRETS") !== undefined);
        assert.deepEqual(global.get("SECRETS"), {
            V: 1,
            A_KEY: `${SECRET_VALUE}-1`,
            A_CONFIG: { retries: 1 },
        });
        assert.equal(global.get("SECRETS_METADATA").version, 1);
        assert.equal(global.get("SECRETS_METADATA").space, "team-a");
        await waitUntil("green status", () => lastStatus(n1));
        assert.deepEqual(lastStatus(n1), { fill: "green", shape: "dot", text: "🆗 Synced v1" });
    });

    it("refreshes after a swap on the autosync interval override", async () => {
        process.env.SPACESECRETS_AUTOSYNC_SECONDS = "0.1";
        await loadFlow([spacesecretsConfig("n1", volume)]);
        const n1 = helper.getNode("n1");
        const global = n1.context().global;
        await waitUntil("version 1", () => global.get("SECRETS_METADATA")?.version === 1);

        writeProjection(volume, documents(2));

        await waitUntil("version 2", () => global.get("SECRETS_METADATA")?.version === 2);
        assert.equal(global.get("SECRETS").A_KEY, `${SECRET_VALUE}-2`);
        await waitUntil("status v2", () => lastStatus(n1)?.text === "🆗 Synced v2");
    });

    it("follows the volume: a swap is read at once, long before the 1m tick", async () => {
        await loadFlow([spacesecretsConfig("n1", volume)]);
        const n1 = helper.getNode("n1");
        const global = n1.context().global;
        await waitUntil("version 1", () => global.get("SECRETS_METADATA")?.version === 1);

        for (const version of [2, 3]) {
            writeProjection(volume, documents(version));
            await waitUntil(`version ${version}`, () => global.get("SECRETS_METADATA")?.version === version);
            assert.equal(global.get("SECRETS").A_KEY, `${SECRET_VALUE}-${version}`);
        }
    });

    it("with followVolume off, a swap waits for the tick", async () => {
        process.env.SPACESECRETS_AUTOSYNC_SECONDS = "0.5";
        await loadFlow([spacesecretsConfig("n1", volume, { followVolume: false })]);
        const n1 = helper.getNode("n1");
        const global = n1.context().global;
        await waitUntil("version 1", () => global.get("SECRETS_METADATA")?.version === 1);
        const swapped = Date.now();
        writeProjection(volume, documents(2));
        await waitUntil("version 2", () => global.get("SECRETS_METADATA")?.version === 2);
        // read by the 0.5 s tick, not by the change (which is read within milliseconds)
        assert.ok(Date.now() - swapped >= 100, `read ${Date.now() - swapped} ms after the swap`);
    });

    it("syncs on save: a deploy reads the new version at once", async () => {
        const flow = [spacesecretsConfig("n1", volume, { autosync: "24h" })];
        await loadFlow(flow);
        let global = helper.getNode("n1").context().global;
        await waitUntil("version 1", () => global.get("SECRETS_METADATA")?.version === 1);

        writeProjection(volume, documents(2));
        await helper.setFlows(flow, "full");

        global = helper.getNode("n1").context().global;
        await waitUntil("version 2", () => global.get("SECRETS_METADATA")?.version === 2);
    });

    it("keeps the last good values and shows a red status on corrupt JSON", async () => {
        process.env.SPACESECRETS_AUTOSYNC_SECONDS = "0.05";
        await loadFlow([spacesecretsConfig("n1", volume)]);
        const n1 = helper.getNode("n1");
        const global = n1.context().global;
        await waitUntil("version 1", () => global.get("SECRETS_METADATA")?.version === 1);

        const corrupt = documents(2);
        corrupt.SECRETS_METADATA = corrupt.SECRETS_METADATA.slice(0, 40);
        corrupt.SECRETS = `{"A_KEY": "${SECRET_VALUE}-2`;
        writeProjection(volume, corrupt);

        const red = await waitUntil("red status", () =>
            statusesOf(n1).find((status) => status.fill === "red"),
        );
        assert.equal(red.text, "SECRETS is not valid JSON (keeping v1)");
        assert.equal(red.shape, "ring");
        assert.equal(global.get("SECRETS").A_KEY, `${SECRET_VALUE}-1`);
        assert.equal(global.get("SECRETS_METADATA").version, 1);
        for (const text of [...statusesOf(n1).map((s) => s.text), ...warningsOf(n1)]) {
            assert.ok(!text.includes(SECRET_VALUE), "a value leaked into a status or warning");
        }

        const brokenMetadata = documents(3);
        brokenMetadata.SECRETS_METADATA = "{not json";
        writeProjection(volume, brokenMetadata);
        await waitUntil("metadata problem named", () =>
            statusesOf(n1).some((s) => s.text === "SECRETS_METADATA is not valid JSON (keeping v1)"),
        );
        assert.equal(global.get("SECRETS").A_KEY, `${SECRET_VALUE}-1`);

        writeProjection(volume, documents(4));
        await waitUntil("recovered", () => lastStatus(n1)?.text === "🆗 Synced v4");
        assert.equal(global.get("SECRETS").A_KEY, `${SECRET_VALUE}-4`);
    });

    it("names a missing document in the status", async () => {
        const payload = documents(1);
        delete payload.SECRETS_METADATA;
        writeProjection(volume, payload);
        await loadFlow([spacesecretsConfig("n1", volume)]);
        const n1 = helper.getNode("n1");
        await waitUntil("red status", () => lastStatus(n1)?.fill === "red");
        assert.equal(lastStatus(n1).text, "SECRETS_METADATA is missing");
        assert.equal(n1.context().global.get("SECRETS"), undefined);
    });

    it("warns on a second instance, which stays idle until the first is removed", async () => {
        const other = path.join(tmp, "other");
        writeProjection(other, documents(9));
        await loadFlow([spacesecretsConfig("n1", volume), spacesecretsConfig("n2", other)]);
        const n1 = helper.getNode("n1");
        const n2 = helper.getNode("n2");

        await waitUntil("n1 synced", () => lastStatus(n1)?.text === "🆗 Synced v1");
        assert.equal(warningsOf(n1).length, 0);
        assert.equal(warningsOf(n2).length, 1);
        assert.match(warningsOf(n2)[0], /another secret manager node \(n1\)/);
        assert.deepEqual(lastStatus(n2), {
            fill: "yellow",
            shape: "ring",
            text: "⚠ duplicate secret manager",
        });
        assert.equal(n1.context().global.get("SECRETS_METADATA").version, 1);

        // A "nodes" deploy that removes n1 leaves n2 running: it takes over.
        await helper.setFlows([spacesecretsConfig("n2", other)], "nodes");
        await waitUntil("n2 synced", () => lastStatus(n2)?.text === "🆗 Synced v9");
        assert.equal(n2.context().global.get("SECRETS_METADATA").version, 9);
    });

    it("without sync on save still reads at start when global SECRETS is empty", async () => {
        await loadFlow([spacesecretsConfig("n1", volume, { syncOnSave: false })]);
        const n1 = helper.getNode("n1");
        await waitUntil("first sync", () => lastStatus(n1)?.text === "🆗 Synced v1");
    });

    it("without sync on save waits for the autosync tick when SECRETS exist", async () => {
        process.env.SPACESECRETS_AUTOSYNC_SECONDS = "0.3";
        const flow = [spacesecretsConfig("n1", volume, { syncOnSave: false })];
        await loadFlow(flow);
        let n1 = helper.getNode("n1");
        await waitUntil("first sync", () => lastStatus(n1)?.text === "🆗 Synced v1");

        writeProjection(volume, documents(2));
        await helper.setFlows(flow, "full");
        n1 = helper.getNode("n1");
        const global = n1.context().global;
        // The deploy did not read: the runtime still has version 1 right after it.
        assert.equal(global.get("SECRETS_METADATA").version, 1);
        assert.deepEqual(statusesOf(n1)[0], {
            fill: "grey",
            shape: "ring",
            text: "waiting for autosync",
        });
        await waitUntil("tick sync", () => global.get("SECRETS_METADATA")?.version === 2);
    });

    it("re-reads at once on the editor's Sync now button (the admin endpoint)", async () => {
        // 24h and no sync on save: only the button can read version 2 now
        await loadFlow([spacesecretsConfig("n1", volume, { autosync: "24h", syncOnSave: false })]);
        const n1 = helper.getNode("n1");
        const global = n1.context().global;
        await waitUntil("first sync", () => lastStatus(n1)?.text === "🆗 Synced v1");

        writeProjection(volume, documents(2));
        const res = await helper.request().post("/spacesecrets/n1/sync").expect(200);
        // answered once the read is done: no wait needed
        assert.deepEqual(res.body, { synced: true, version: 2, status: "🆗 Synced v2" });
        assert.equal(global.get("SECRETS_METADATA").version, 2);
        assert.equal(global.get("SECRETS").A_KEY, `${SECRET_VALUE}-2`);
        assert.equal(lastStatus(n1).text, "🆗 Synced v2");

        const corrupt = documents(3);
        corrupt.SECRETS = `{"A_KEY": "${SECRET_VALUE}-3`;
        writeProjection(volume, corrupt);
        const bad = await helper.request().post("/spacesecrets/n1/sync").expect(200);
        assert.deepEqual(bad.body, {
            synced: false,
            version: 2,
            status: "SECRETS is not valid JSON (keeping v2)",
        });
        assert.equal(global.get("SECRETS").A_KEY, `${SECRET_VALUE}-2`);
        for (const text of [res.text, bad.text]) {
            assert.ok(!text.includes(SECRET_VALUE), "a value leaked into the endpoint's answer");
        }

        await helper.request().post("/spacesecrets/no-such-node/sync").expect(404);
    });

    it("answers Sync now with 409 for an idle duplicate", async () => {
        const other = path.join(tmp, "other");
        writeProjection(other, documents(9));
        await loadFlow([
            spacesecretsConfig("n1", volume, { autosync: "24h" }),
            spacesecretsConfig("n2", other),
        ]);
        const n1 = helper.getNode("n1");
        await waitUntil("n1 synced", () => lastStatus(n1)?.text === "🆗 Synced v1");
        const idle = await helper.request().post("/spacesecrets/n2/sync").expect(409);
        assert.match(idle.body.status, /idle/);
        assert.equal(n1.context().global.get("SECRETS_METADATA").version, 1);
    });

    it("Sync now does not settle for a read that began before the files changed", async (t) => {
        await loadFlow([spacesecretsConfig("n1", volume, { autosync: "24h" })]);
        const n1 = helper.getNode("n1");
        await waitUntil("n1 synced", () => lastStatus(n1)?.text === "🆗 Synced v1");

        // A read is under way and has checked the link (version 1) when the volume is swapped:
        // its last readlink is held until the button's request has arrived.
        const realReadlink = fs.promises.readlink;
        t.after(() => {
            fs.promises.readlink = realReadlink;
        });
        let calls = 0;
        let checked = false;
        let release;
        const gate = new Promise((resolve) => {
            release = resolve;
        });
        fs.promises.readlink = async (...args) => {
            const target = await realReadlink(...args);
            if (++calls === 2) {
                checked = true;
                await gate;
            }
            return target;
        };
        const underWay = n1.syncNow();
        await waitUntil("the read under way to check the link", () => checked);
        writeProjection(volume, documents(2));
        const requested = n1.syncNow;
        let arrived = false;
        n1.syncNow = function () {
            arrived = true;
            return requested.apply(this);
        };
        const answer = helper.request().post("/spacesecrets/n1/sync").expect(200).then((r) => r);
        await waitUntil("the button's request", () => arrived);
        release();
        assert.equal((await underWay).version, 1);
        assert.equal((await answer).body.version, 2);
        assert.equal(n1.context().global.get("SECRETS_METADATA").version, 2);
    });

    it("has an editor button that posts to the endpoint the runtime serves", () => {
        const html = fs.readFileSync(path.join(__dirname, "..", "spacesecrets.html"), "utf8");
        assert.match(html, /button: \{[\s\S]*onclick: function \(\) \{[\s\S]*syncNow\(this\)/);
        assert.match(html, /url: "spacesecrets\/" \+ encodeURIComponent\(node\.id\) \+ "\/sync"/);
        assert.equal(spacesecretsNode.SYNC_ROUTE, "/spacesecrets/:id/sync");
        assert.match(html, /type: "POST"/);
    });

    it("clears its timer on close", async (t) => {
        const live = new Set();
        const realSetInterval = global.setInterval;
        const realClearInterval = global.clearInterval;
        t.after(() => {
            global.setInterval = realSetInterval;
            global.clearInterval = realClearInterval;
        });
        global.setInterval = (...args) => {
            const timer = realSetInterval(...args);
            live.add(timer);
            return timer;
        };
        global.clearInterval = (timer) => {
            live.delete(timer);
            realClearInterval(timer);
        };
        await loadFlow([spacesecretsConfig("n1", volume)]);
        const n1 = helper.getNode("n1");
        await waitUntil("first sync", () => lastStatus(n1)?.text === "🆗 Synced v1");
        assert.ok(live.size >= 1, "the node should run an autosync timer");

        await helper.unload();

        assert.equal(live.size, 0, "a timer survived close");
    });
});

describe("readDocuments", () => {
    it("accepts a plain directory and reports problems by file name", async () => {
        const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "spacesecrets-plain-"));
        try {
            for (const [name, content] of Object.entries(documents(5))) {
                fs.writeFileSync(path.join(tmp, name), content);
            }
            const { metadata } = await spacesecretsNode.readDocuments(tmp);
            assert.equal(metadata.version, 5);

            fs.writeFileSync(path.join(tmp, "SECRETS"), "[1, 2]");
            await assert.rejects(spacesecretsNode.readDocuments(tmp), {
                message: "SECRETS is not a JSON object",
            });
            fs.writeFileSync(path.join(tmp, "SECRETS"), "{}");
            fs.writeFileSync(path.join(tmp, "SECRETS_METADATA"), '{"version": "5"}');
            await assert.rejects(spacesecretsNode.readDocuments(tmp), {
                message: "SECRETS_METADATA has no integer version",
            });
            await assert.rejects(spacesecretsNode.readDocuments(path.join(tmp, "nope")), {
                message: `directory ${path.join(tmp, "nope")} does not exist`,
            });
        } finally {
            fs.rmSync(tmp, { recursive: true, force: true });
        }
    });

    it("never returns a mix of two versions while a writer swaps them", async () => {
        const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "spacesecrets-race-"));
        const volume = path.join(tmp, "volume");
        writeProjection(volume, documents(1));
        const versions = 1500;
        // The writer runs in its own thread, with the same kubelet steps as above.
        const worker = new Worker(
            `
            const crypto = require("node:crypto");
            const fs = require("node:fs");
            const path = require("node:path");
            const { workerData } = require("node:worker_threads");
            const SECRET_VALUE = ${JSON.stringify(SECRET_VALUE)};
            ${timestampedName}
            ${writeProjection}
            ${documents}
            for (let v = 2; v <= workerData.versions + 1; v++) {
                writeProjection(workerData.volume, documents(v));
            }
            `,
            { eval: true, workerData: { volume, versions } },
        );
        let writerDone = false;
        const finished = new Promise((resolve, reject) => {
            worker.on("error", reject);
            worker.on("exit", (code) => {
                writerDone = true;
                code === 0 ? resolve() : reject(new Error(`writer exited with ${code}`));
            });
        });
        const seen = new Set();
        const mismatches = [];
        const unexpected = new Set();
        try {
            for (let reads = 0; reads < 100000 && !writerDone; reads++) {
                try {
                    const { secrets, metadata } = await spacesecretsNode.readDocuments(volume);
                    if (secrets.V !== metadata.version) mismatches.push([secrets.V, metadata.version]);
                    seen.add(metadata.version);
                } catch (err) {
                    if (!/kept changing/.test(err.message)) unexpected.add(err.message);
                }
            }
            await finished;
        } finally {
            await worker.terminate();
            fs.rmSync(tmp, { recursive: true, force: true });
        }
        assert.deepEqual(mismatches, []);
        assert.deepEqual([...unexpected], []);
        assert.ok(seen.size > 20, `the reader only saw ${seen.size} versions`);
    });

    it("computes the autosync interval, with the test override", () => {
        assert.equal(spacesecretsNode.autosyncMillis("30m", {}), 1800000);
        assert.equal(spacesecretsNode.autosyncMillis("bogus", {}), 60000);
        assert.equal(
            spacesecretsNode.autosyncMillis("24h", { SPACESECRETS_AUTOSYNC_SECONDS: "1.5" }),
            1500,
        );
        assert.equal(
            spacesecretsNode.autosyncMillis("12h", { SPACESECRETS_AUTOSYNC_SECONDS: "-1" }),
            43200000,
        );
    });
});
