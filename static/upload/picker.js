// Choosing files: the two pickers (files; a folder, recursively) and drag and drop of either.
// Every File gets .portalName, its path relative to what was chosen ("run-42/acq_1.ser"), which is
// what the server groups by (partners must share a folder) and how a resumed upload finds its file.

function named(file, path) {
  file.portalName = path;
  return file;
}

// A directory reader returns its entries in pages: read until it answers an empty page.
async function readAll(reader) {
  const entries = [];
  for (;;) {
    const page = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!page.length) return entries;
    entries.push(...page);
  }
}

async function walk(entry) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    return [named(file, entry.fullPath.replace(/^\//, ""))];
  }
  const children = await readAll(entry.createReader());
  return (await Promise.all(children.map(walk))).flat();
}

async function dropped(dataTransfer) {
  // Entries must be taken while the drop event runs; files are read from them afterwards.
  const items = Array.from(dataTransfer.items || []).filter((item) => item.kind === "file");
  const entries = items.map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
  if (entries.length && entries.every(Boolean)) return (await Promise.all(entries.map(walk))).flat();
  return Array.from(dataTransfer.files).map((file) => named(file, file.name));
}

// onFiles(files, problem): called with the chosen files, or with an explanation when reading failed.
export function setUpPicker({ filesInput, folderInput, filesButton, folderButton, zone, onFiles }) {
  const fromInput = (input) => {
    onFiles(Array.from(input.files).map((file) => named(file, file.webkitRelativePath || file.name)));
    input.value = "";  // choosing the same files again (to resume) must fire change again
  };
  filesInput.addEventListener("change", () => fromInput(filesInput));
  folderInput.addEventListener("change", () => fromInput(folderInput));
  filesButton.addEventListener("click", () => filesInput.click());
  folderButton.addEventListener("click", () => folderInput.click());

  zone.addEventListener("dragover", (event) => {
    if (!Array.from(event.dataTransfer.types).includes("Files")) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("dragging");
  });
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    try {
      onFiles(await dropped(event.dataTransfer));
    } catch (e) {
      onFiles([], `The dropped items could not be read (${e.message || e.name}): try Select a folder instead`);
    }
  });
}
