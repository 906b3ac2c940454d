"""runfolder.reader: the one reader of run folders; its typed tables are pandas' own reading."""

import pytest

from initlab.runfolder.reader import read_rows, read_summary, read_table

pd = pytest.importorskip("pandas")


@pytest.mark.parametrize(
    "text",
    [
        "step,layer,kind,act_var\n0,1,hidden,0.5\n0,2,output,\n8,1,hidden,1e-300\n",  # ints, strings, floats, NaN
        "step,layer,kind\n",  # a header without rows
        "a,b,c\n1,2.5,x\n3,4\n",  # a row cut short
        "a,b\nTrue,1\nFalse,\n",  # booleans
        "a,b\nx,\n,y\n",  # strings with empty cells
        "a,b\n,1\n,2\n",  # a column of empty cells
        'a\n1\n""\n2\n',  # one column with an empty cell
        "a\n1\n\n2\n",  # a blank line
        "lo,hi\ninf,-inf\n1e308,0.1\n",  # infinities
    ],
)
def test_a_table_is_typed_as_pandas_reads_the_csv(tmp_path, text):
    f = tmp_path / "t.csv"
    f.write_text(text)
    pd.testing.assert_frame_equal(pd.DataFrame(read_table(f)), pd.read_csv(f), check_exact=True)


def test_rows_are_cell_texts_and_a_bad_summary_reads_as_empty(tmp_path):
    (tmp_path / "m.csv").write_text("step,train_loss\n0,\n8,0.25\n")
    assert read_rows(tmp_path / "m.csv") == [{"step": "0", "train_loss": ""}, {"step": "8", "train_loss": "0.25"}]
    assert read_summary(tmp_path) == {}
    (tmp_path / "summary.json").write_text("[1, 2]")
    assert read_summary(tmp_path) == {}
    (tmp_path / "summary.json").write_text('{"status": "completed"}')
    assert read_summary(tmp_path) == {"status": "completed"}
