// The page that hides words in a referral, improved: text selected in "what goes" is put
// in "Words to hide", so a DSL selects a name and presses the button. The page works
// without this: the words are typed, or copied and pasted.
function selectionToHide() {
  const input = document.getElementById("text");
  const area = document.querySelector(".app-as-sent");
  if (!input || !area) return;
  document.addEventListener("selectionchange", () => {
    const selection = document.getSelection();
    if (!selection || selection.isCollapsed) return;
    if (!area.contains(selection.anchorNode) || !area.contains(selection.focusNode)) return;
    const text = selection.toString().trim();
    // Hidden words are matched exactly, on one line: a selection across lines is left out.
    if (text.length < 2 || text.length > 500 || /[\r\n]/.test(text)) return;
    input.value = text;
  });
}

selectionToHide();
